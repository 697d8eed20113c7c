//! The node's Kademlia record store: the provider records it keeps for
//! itself and for others, and how many it reports.
//!
//! Owns: provider records by key (at most [`PROVIDERS_PER_KEY`] per key, at
//! most `max_keys` keys), the records this node provides, and the counts
//! the router publishes ([`StoreStats`]). Value records, which Shoal does
//! not use, are delegated to libp2p's `MemoryStore`. Does not expire
//! records: Kademlia drops expired ones as it reads them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, hash_map};

use libp2p::PeerId;
use libp2p::kad::store::{self, MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Providers kept per key: Kademlia's k.
pub(super) const PROVIDERS_PER_KEY: usize = 20;

/// How many records a node's store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys with at least one provider record.
    pub keys: usize,
    /// Provider records, this node's own included.
    pub provider_records: usize,
    /// Provider records of keys this node provides itself.
    pub provided: usize,
}

pub(super) struct ProviderStore {
    local: PeerId,
    max_keys: usize,
    providers: HashMap<RecordKey, Vec<ProviderRecord>>,
    /// This node's own records; kept in step with `providers`.
    provided: HashSet<ProviderRecord>,
    records: usize,
    values: MemoryStore,
}

impl ProviderStore {
    pub(super) fn new(local: PeerId, max_keys: usize) -> Self {
        let values = MemoryStore::with_config(local, MemoryStoreConfig::default());
        Self { local, max_keys, providers: HashMap::new(), provided: HashSet::new(), records: 0, values }
    }

    pub(super) fn stats(&self) -> StoreStats {
        StoreStats { keys: self.providers.len(), provider_records: self.records, provided: self.provided.len() }
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = std::iter::Map<
        std::collections::hash_set::Iter<'a, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        self.values.get(key)
    }

    fn put(&mut self, record: Record) -> store::Result<()> {
        self.values.put(record)
    }

    fn remove(&mut self, key: &RecordKey) {
        self.values.remove(key);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records()
    }

    /// Updates the provider's record in place; a new provider of a key that
    /// has [`PROVIDERS_PER_KEY`] already is not stored (the first ones stay).
    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        let num_keys = self.providers.len();
        let providers = match self.providers.entry(record.key.clone()) {
            hash_map::Entry::Occupied(entry) => entry.into_mut(),
            hash_map::Entry::Vacant(_) if num_keys >= self.max_keys => return Err(store::Error::MaxProvidedKeys),
            hash_map::Entry::Vacant(entry) => entry.insert(Vec::new()),
        };
        let own = record.provider == self.local;
        if let Some(existing) = providers.iter_mut().find(|p| p.provider == record.provider) {
            if own {
                self.provided.remove(existing);
                self.provided.insert(record.clone());
            }
            *existing = record;
            return Ok(());
        }
        if providers.len() >= PROVIDERS_PER_KEY {
            return Ok(());
        }
        if own {
            self.provided.insert(record.clone());
        }
        providers.push(record);
        self.records += 1;
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers.get(key).cloned().unwrap_or_default()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.provided.iter().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        let hash_map::Entry::Occupied(mut entry) = self.providers.entry(key.clone()) else { return };
        if let Some(i) = entry.get().iter().position(|p| p.provider == *provider) {
            let removed = entry.get_mut().swap_remove(i);
            self.records -= 1;
            if removed.provider == self.local {
                self.provided.remove(&removed);
            }
        }
        if entry.get().is_empty() {
            entry.remove();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(key: &RecordKey, provider: PeerId) -> ProviderRecord {
        ProviderRecord::new(key.clone(), provider, Vec::new())
    }

    #[test]
    fn counts_follow_adds_updates_and_removals() {
        let local = PeerId::random();
        let mut store = ProviderStore::new(local, 10);
        let key = RecordKey::new(b"k");
        let other = PeerId::random();
        store.add_provider(record(&key, local)).unwrap();
        store.add_provider(record(&key, other)).unwrap();
        store.add_provider(record(&key, other)).unwrap();
        assert_eq!(store.stats(), StoreStats { keys: 1, provider_records: 2, provided: 1 });
        store.remove_provider(&key, &local);
        assert_eq!(store.stats(), StoreStats { keys: 1, provider_records: 1, provided: 0 });
        store.remove_provider(&key, &other);
        assert_eq!(store.stats(), StoreStats::default());
    }

    #[test]
    fn keys_and_providers_per_key_are_bounded() {
        let mut store = ProviderStore::new(PeerId::random(), 2);
        let key = RecordKey::new(b"k");
        for _ in 0..PROVIDERS_PER_KEY + 5 {
            store.add_provider(record(&key, PeerId::random())).unwrap();
        }
        assert_eq!(store.providers(&key).len(), PROVIDERS_PER_KEY);
        store.add_provider(record(&RecordKey::new(b"j"), PeerId::random())).unwrap();
        assert!(store.add_provider(record(&RecordKey::new(b"i"), PeerId::random())).is_err());
    }
}
