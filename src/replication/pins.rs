//! The images an operator wants kept warm: from a flag, and from a file a
//! ConfigMap can mount (re-read every round, so edits apply without a
//! restart).
//!
//! Owns: parsing the list. One image per line, fully qualified
//! (`registry/repository:tag`), optionally followed by its own replica
//! count; `#` starts a comment. A bad line is reported with its number and
//! skipped; it never stops the other images from being kept warm.

use std::path::Path;

use crate::oci::TagRef;

/// One image to keep warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    pub image: TagRef,
    /// Nodes that should hold it; `None` falls back to the global setting.
    pub replicas: Option<usize>,
}

/// Why a pinned image entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("{entry:?} is not a fully qualified image (registry/repository:tag): {reason}")]
    Image { entry: String, reason: String },
    #[error("{entry:?}: the replica count must be a number of at least 1")]
    Replicas { entry: String },
    #[error("{entry:?}: expected an image and at most a replica count")]
    Shape { entry: String },
}

impl std::str::FromStr for PinnedImage {
    type Err = PinError;

    /// `registry/repository:tag`, optionally followed by whitespace (or `=`,
    /// handy in a comma-separated flag) and a replica count.
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let mut words = entry.split(|c: char| c.is_whitespace() || c == '=').filter(|w| !w.is_empty());
        let shape = || PinError::Shape { entry: clip(entry) };
        let image = words.next().ok_or_else(shape)?;
        let image: TagRef = image
            .parse()
            .map_err(|e: crate::oci::NameError| PinError::Image { entry: clip(entry), reason: e.to_string() })?;
        let replicas = match words.next() {
            None => None,
            Some(count) => match count.parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => return Err(PinError::Replicas { entry: clip(entry) }),
            },
        };
        if words.next().is_some() {
            return Err(shape());
        }
        Ok(Self { image, replicas })
    }
}

/// Parses a pinned-images file; bad lines come back as errors with their
/// line numbers, next to the good entries.
pub fn parse_file(text: &str) -> (Vec<PinnedImage>, Vec<(usize, PinError)>) {
    let mut images = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        match line.parse() {
            Ok(image) => images.push(image),
            Err(error) => errors.push((number + 1, error)),
        }
    }
    (images, errors)
}

/// The flag's images followed by the file's, without repeats (the first
/// mention of an image wins). A missing or unreadable file counts as empty,
/// with a warning: a ConfigMap may be absent on purpose.
pub fn load(flag: &[PinnedImage], file: Option<&Path>) -> Vec<PinnedImage> {
    let mut images: Vec<PinnedImage> = flag.to_vec();
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (from_file, errors) = parse_file(&text);
                for (line, error) in errors {
                    tracing::warn!(file = %path.display(), line, %error, "skipping a pinned image");
                }
                images.extend(from_file);
            }
            Err(error) => tracing::warn!(file = %path.display(), %error, "cannot read the pinned images file"),
        }
    }
    let mut seen = std::collections::HashSet::new();
    images.retain(|pin| seen.insert(pin.image.clone()));
    images
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pin(s: &str) -> PinnedImage {
        s.parse().unwrap()
    }

    #[test]
    fn entries_take_an_optional_replica_count() {
        assert_eq!(pin("docker.io/library/nginx:1.25").replicas, None);
        let counted = pin("registry.test/team/app:v1   3");
        assert_eq!((counted.image.to_string().as_str(), counted.replicas), ("registry.test/team/app:v1", Some(3)));
        assert_eq!(pin("registry.test/team/app:v1=2").replicas, Some(2));
    }

    #[test]
    fn bad_entries_are_clear_errors() {
        assert!(matches!("nginx".parse::<PinnedImage>(), Err(PinError::Image { .. })));
        assert!(matches!("docker.io/library/nginx".parse::<PinnedImage>(), Err(PinError::Image { .. })));
        assert!(matches!("registry.test/a:v1 0".parse::<PinnedImage>(), Err(PinError::Replicas { .. })));
        assert!(matches!("registry.test/a:v1 two".parse::<PinnedImage>(), Err(PinError::Replicas { .. })));
        assert!(matches!("registry.test/a:v1 2 3".parse::<PinnedImage>(), Err(PinError::Shape { .. })));
    }

    #[test]
    fn files_have_comments_blank_lines_and_numbered_errors() {
        let text =
            "# keep warm\nregistry.test/team/app:v1 2\n\n  registry.test/team/db:v3  # the database\nbad line here\n";
        let (images, errors) = parse_file(text);
        let names: Vec<String> = images.iter().map(|p| p.image.to_string()).collect();
        assert_eq!(names, ["registry.test/team/app:v1", "registry.test/team/db:v3"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 5);
    }

    #[test]
    fn the_flag_comes_first_and_repeats_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pinned");
        std::fs::write(&file, "registry.test/team/app:v1 5\nregistry.test/team/db:v3\n").unwrap();
        let flag = vec![pin("registry.test/team/app:v1 2")];
        let loaded = load(&flag, Some(&file));
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].replicas, Some(2), "the flag's entry wins");
        assert_eq!(load(&flag, Some(&dir.path().join("absent"))), flag, "a missing file is empty");
    }
}
