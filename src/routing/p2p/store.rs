//! The node's Kademlia record store: the provider records it keeps for
//! itself and for others, and how many it reports.
//!
//! Owns: provider records by key (at most [`PROVIDERS_PER_KEY`] per key, at
//! most `max_keys` keys), the records this node provides, and the counts
//! the router publishes ([`StoreStats`]). Value records, which Shoal does
//! not use, are delegated to libp2p's `MemoryStore`. Does not expire
//! records: Kademlia drops expired ones as it reads them.
//!
//! A key every node holds (a base layer) has far more providers than a
//! store keeps. libp2p's `MemoryStore` keeps the first ones to announce and
//! returns them in the same order to everyone, so every lookup of such a
//! key would send its pulls to the same few nodes. This store keeps a
//! uniform random sample of the providers it heard of (reservoir sampling)
//! and answers each request with its records in a random order (Kademlia
//! sends the first `k`), so the traffic spreads over the cluster.

use std::borrow::Cow;
use std::collections::{HashMap, hash_map};

use libp2p::PeerId;
use libp2p::kad::store::{self, MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use rand::RngExt;
use rand::seq::SliceRandom;

/// Providers kept per key: more than the `k` = 20 a lookup answer carries,
/// so that answers differ from one request to the next.
pub(super) const PROVIDERS_PER_KEY: usize = 64;

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

/// The providers kept for one key, and how many distinct ones were offered.
struct Providers {
    kept: Vec<ProviderRecord>,
    offered: u64,
}

impl Providers {
    /// Room for one record: most keys have one provider (a node's own
    /// unique layers), and a `Vec` would otherwise reserve four at once
    /// (600 bytes per key).
    fn new() -> Self {
        Self { kept: Vec::with_capacity(1), offered: 0 }
    }
}

pub(super) struct ProviderStore {
    local: PeerId,
    max_keys: usize,
    providers: HashMap<RecordKey, Providers>,
    /// Keys among `providers` with this node's own record.
    provided: usize,
    records: usize,
    values: MemoryStore,
}

impl ProviderStore {
    pub(super) fn new(local: PeerId, max_keys: usize) -> Self {
        let values = MemoryStore::with_config(local, MemoryStoreConfig::default());
        Self { local, max_keys, providers: HashMap::new(), provided: 0, records: 0, values }
    }

    pub(super) fn stats(&self) -> StoreStats {
        StoreStats { keys: self.providers.len(), provider_records: self.records, provided: self.provided }
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = Provided<'a>;

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

    /// Updates the provider's record in place. A new provider of a key that
    /// has [`PROVIDERS_PER_KEY`] already takes the place of a random other
    /// one with the chance that keeps the kept ones a uniform sample of all
    /// offered; this node's own record is always kept.
    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        let num_keys = self.providers.len();
        let providers = match self.providers.entry(record.key.clone()) {
            hash_map::Entry::Occupied(entry) => entry.into_mut(),
            hash_map::Entry::Vacant(_) if num_keys >= self.max_keys => return Err(store::Error::MaxProvidedKeys),
            hash_map::Entry::Vacant(entry) => entry.insert(Providers::new()),
        };
        let own = record.provider == self.local;
        if let Some(existing) = providers.kept.iter_mut().find(|p| p.provider == record.provider) {
            *existing = record;
            return Ok(());
        }
        providers.offered += 1;
        if providers.kept.len() < PROVIDERS_PER_KEY {
            self.provided += usize::from(own);
            providers.kept.push(record);
            self.records += 1;
            return Ok(());
        }
        let mut rng = rand::rng();
        let lucky = own || rng.random_range(0..providers.offered) < PROVIDERS_PER_KEY as u64;
        let others: Vec<usize> =
            (0..providers.kept.len()).filter(|i| providers.kept[*i].provider != self.local).collect();
        if let (true, Some(&victim)) = (lucky, others.get(rng.random_range(0..others.len().max(1)))) {
            self.provided += usize::from(own);
            providers.kept[victim] = record;
        }
        Ok(())
    }

    /// The key's providers in a random order.
    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut records = self.providers.get(key).map(|p| p.kept.clone()).unwrap_or_default();
        records.shuffle(&mut rand::rng());
        records
    }

    /// Kademlia asks for these only to republish, which Shoal leaves to
    /// its advertiser: a walk over every key is cheap enough for that.
    fn provided(&self) -> Self::ProvidedIter<'_> {
        Provided { keys: self.providers.values(), local: self.local }
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        let hash_map::Entry::Occupied(mut entry) = self.providers.entry(key.clone()) else { return };
        if let Some(i) = entry.get().kept.iter().position(|p| p.provider == *provider) {
            let removed = entry.get_mut().kept.swap_remove(i);
            self.records -= 1;
            self.provided -= usize::from(removed.provider == self.local);
        }
        if entry.get().kept.is_empty() {
            entry.remove();
        }
    }
}

/// This node's own records, one per key it provides.
pub(super) struct Provided<'a> {
    keys: hash_map::Values<'a, RecordKey, Providers>,
    local: PeerId,
}

impl<'a> Iterator for Provided<'a> {
    type Item = Cow<'a, ProviderRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let local = self.local;
        self.keys.by_ref().find_map(|providers| providers.kept.iter().find(|p| p.provider == local)).map(Cow::Borrowed)
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
        let provided: Vec<(RecordKey, PeerId)> = store.provided().map(|r| (r.key.clone(), r.provider)).collect();
        assert_eq!(provided, vec![(key.clone(), local)]);
        store.remove_provider(&key, &local);
        assert_eq!(store.stats(), StoreStats { keys: 1, provider_records: 1, provided: 0 });
        assert_eq!(store.provided().count(), 0);
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
        assert_eq!(store.stats().provider_records, PROVIDERS_PER_KEY);
        store.add_provider(record(&RecordKey::new(b"j"), PeerId::random())).unwrap();
        assert!(store.add_provider(record(&RecordKey::new(b"i"), PeerId::random())).is_err());
    }

    #[test]
    fn a_crowded_key_keeps_a_spread_sample_and_answers_in_random_order() {
        let local = PeerId::random();
        let mut store = ProviderStore::new(local, 10);
        let key = RecordKey::new(b"base layer");
        store.add_provider(record(&key, local)).unwrap();
        let offered: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        for peer in &offered {
            store.add_provider(record(&key, *peer)).unwrap();
        }
        let kept: Vec<PeerId> = store.providers(&key).iter().map(|p| p.provider).collect();
        assert_eq!(kept.len(), PROVIDERS_PER_KEY);
        assert!(kept.contains(&local), "this node's own record stays");
        assert_eq!(store.stats().provided, 1);
        let early = kept.iter().filter(|p| offered[..PROVIDERS_PER_KEY].contains(p)).count();
        // A uniform sample keeps ~4 of the first 64 of 1,000 (the first-come rule kept all 63).
        assert!(early < PROVIDERS_PER_KEY / 2, "{early} of the first providers kept");
        let first_answers: std::collections::HashSet<PeerId> =
            (0..50).map(|_| store.providers(&key)[0].provider).collect();
        assert!(first_answers.len() > 1, "answers come in a random order");
    }
}
