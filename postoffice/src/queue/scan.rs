//! The start scan, in the background while the API serves and delivery
//! runs: finished records first (their counts and remembered keys, and
//! which messages finished just before the stop), then every queued
//! message in batches (one trip to the blocking pool reads a few hundred),
//! each indexed as soon as it is read. What it holds beyond the index is
//! the list of ids (16 bytes each) and one file's summary at a time.

use std::collections::HashSet;
use std::time::Duration;

use hedwig::id::Id;

use super::Queue;

/// Queued messages read per trip to the blocking pool.
const BATCH: usize = 256;
/// Finished records written this close to the last write before the stop
/// may have messages whose unlink did not reach the disk.
const RECENT: Duration = Duration::from_secs(60);

/// Scans `queue`'s directory and indexes it.
pub async fn run(queue: &Queue, _now: u64) {
    let recent = finished(queue).await;
    queued(queue, &recent).await;
    orphans(queue).await;
}

/// Reads the finished records' files: counts, keys, and the ids finished
/// within RECENT of the newest write.
async fn finished(queue: &Queue) -> HashSet<Id> {
    let done = queue.store().done();
    let files = match done.files().await {
        Ok(f) => f,
        Err(e) => {
            log::error!("cannot list finished records: {e}");
            return HashSet::new();
        }
    };
    let newest = files.iter().map(|(_, written, _)| *written).max();
    let mut recent = HashSet::new();
    for (minute, written, path) in files {
        let summary = match done.summarize(minute).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("{}: cannot read finished records: {e}", path.display());
                continue;
            }
        };
        if summary.bad_lines > 0 {
            log::warn!(
                "{}: {} unreadable lines skipped",
                path.display(),
                summary.bad_lines
            );
        }
        let is_recent =
            newest.is_some_and(|n| n.duration_since(written).unwrap_or_default() < RECENT);
        let mut m = queue.memory();
        for (id, key, tally) in summary.records {
            m.tallies.add(minute, tally);
            if let Some(k) = key {
                let h = m.keys.hash(&k);
                m.keys.finished(h, id);
            }
            if is_recent {
                recent.insert(id);
            }
        }
    }
    recent
}

/// Reads every queued message's record and indexes it.
async fn queued(queue: &Queue, finished: &HashSet<Id>) {
    let store = queue.store();
    let ids = match store.list().await {
        Ok(ids) => ids,
        Err(e) => {
            log::error!("cannot list the queue: {e}");
            return;
        }
    };
    if !ids.is_empty() {
        log::info!("queue: reading {} queued messages", ids.len());
    }
    let mut scanned = 0usize;
    for batch in ids.chunks(BATCH) {
        let batch: Vec<Id> = batch
            .iter()
            .copied()
            .filter(|id| !finished.contains(id))
            .collect();
        for (id, loaded) in store.load(batch).await {
            match loaded {
                Ok(r) if r.finished_at().is_some() => {
                    // An older version left a finished record beside its message.
                    file_finished(queue, &r).await;
                }
                Ok(r) => {
                    let mut m = queue.memory();
                    if m.scanning.as_ref().is_some_and(|s| s.contains(&id)) {
                        continue;
                    }
                    m.index(&r);
                    scanned += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::error!("{id}: cannot read queued message, left in place: {e}"),
            }
        }
        queue.notify();
    }
    // Messages finished just before the stop whose files outlived it: done.
    for &id in finished {
        if ids.binary_search(&id).is_ok() {
            log::info!("{id}: finished before the last stop; removing its files");
            if let Err(e) = store.unlink(id).await {
                log::error!("{id}: cannot remove finished message: {e}");
            }
        }
    }
    log::info!("queue: scan done, {scanned} messages queued");
}

/// Records in `state/` without a message: finished ones (as an older
/// version kept them) go to the finished records, others were left by a
/// crash between unlinks and are removed.
async fn orphans(queue: &Queue) {
    let store = queue.store();
    let records = match store.list_records().await {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot list delivery records: {e}");
            return;
        }
    };
    for batch in records.chunks(BATCH) {
        for (id, loaded) in store.load(batch.to_vec()).await {
            match loaded {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                _ => continue,
            }
            match store.orphan_record(id).await {
                Ok(r) if r.finished_at().is_some() => file_finished(queue, &r).await,
                _ => {
                    log::warn!("{id}: delivery record without message, removed");
                    let _ = store.unlink(id).await;
                }
            }
        }
    }
}

/// Moves finished record `r` into the finished records, counted.
async fn file_finished(queue: &Queue, r: &super::Record) {
    match queue.store().finish(std::slice::from_ref(r)).await {
        Ok(tallies) => {
            let mut m = queue.memory();
            for (minute, t) in tallies {
                m.tallies.add(minute, t);
            }
        }
        Err(e) => log::error!("{}: cannot file finished record: {e}", r.id),
    }
}
