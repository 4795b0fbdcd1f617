//! Fuzz bodies for stored-value decoding, shared by the cargo-fuzz target and the corpus test.
//!
//! Not part of the stable API.

/// Arbitrary bytes as stored values: every backend's decoding yields the value or a typed
/// "corrupt" error, never a panic. The first byte picks the backend.
pub fn decode(data: &[u8]) -> Result<(), String> {
    let Some((&which, rest)) = data.split_first() else {
        return Ok(());
    };
    match which % 2 {
        #[cfg(feature = "redis")]
        0 => crate::redis::fuzz_decode(rest),
        #[cfg(feature = "file")]
        1 => file(rest),
        // A backend whose feature is off has nothing to decode.
        _ => {
            let _ = rest;
            Ok(())
        }
    }
}

/// Arbitrary bytes as the embedded store's file: opening and loading it fail with a typed
/// error, or succeed; they never panic.
#[cfg(feature = "file")]
fn file(data: &[u8]) -> Result<(), String> {
    use crate::StateStorage;

    let dir = std::env::temp_dir().join(format!("sync-storage-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("state.redb");
    std::fs::write(&path, data).map_err(|e| e.to_string())?;
    let outcome = match crate::FileStorage::open(&path) {
        Ok(storage) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            let loaded = runtime.block_on(storage.load(1));
            match loaded {
                Ok(_) => Ok(()),
                Err(error) if error.is_corrupt() || error.is_unavailable() => Ok(()),
                Err(error) => Err(format!("loading a garbage file failed oddly: {error}")),
            }
        }
        Err(_) => Ok(()),
    };
    let _ = std::fs::remove_file(&path);
    outcome
}
