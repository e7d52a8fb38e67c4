//! What the API asks of the queue besides new messages: a message's
//! record, deleting it, flushing the schedule, counts, pages of records, and
//! dropping finished records past `keep_status`.

use std::io;
use std::time::{Duration, UNIX_EPOCH};

use hedwig::id::Id;

use super::done::{self, Done};
use super::memory::count;
use super::record::{Record, State};
use super::{Counts, Queue};

impl Queue {
    /// The record of `id`: queued (from its files) or finished and kept.
    pub async fn get(&self, id: Id) -> io::Result<Option<Record>> {
        match self
            .store()
            .load(vec![id])
            .await
            .pop()
            .expect("one in, one out")
            .1
        {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.store().done().get(id).await,
            Err(e) => Err(e),
        }
    }

    /// Deletes `id` (queued: its files; finished: its record); `false` when
    /// unknown.
    pub async fn delete(&self, id: Id) -> io::Result<bool> {
        let record = match self.record(id).await {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(r) = self.store().done().get(id).await? else {
                    return Ok(false);
                };
                self.store().done().delete(id).await?;
                self.memory()
                    .tallies
                    .sub(Done::minute(id), done::Tallies::of(&r));
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        self.store().unlink(id).await?;
        let mut m = self.memory();
        if let Some(k) = &record.key {
            let h = m.keys.hash(k);
            m.keys.remove(h, id);
        }
        if let Some(t) = m.in_flight.get_mut(&id) {
            // The delivery in flight counts it out when it ends.
            t.deleted = true;
        } else if m.unschedule(id) {
            m.pending.sub(&record);
        } else if let Some(ids) = &mut m.scanning {
            // Not scanned yet: the scan must not index it.
            ids.insert(id);
        }
        Ok(true)
    }

    /// Makes every waiting message due at `now`; returns how many.
    pub fn flush(&self, now: u64) -> usize {
        let n = self.memory().flush(now);
        self.notify();
        n
    }

    /// Makes message `id` due at `now`: `None` when unknown, else whether
    /// it was waiting for a later time (a finished one, or one out for
    /// delivery, was not).
    pub async fn flush_one(&self, id: Id, now: u64) -> io::Result<Option<bool>> {
        let flushed = self.memory().flush_one(id, now);
        if flushed == Some(true) {
            self.notify();
        }
        match flushed {
            Some(f) => Ok(Some(f)),
            None => Ok(self.get(id).await?.map(|_| false)),
        }
    }

    /// Drops finished records whose files were last written `keep_status`
    /// before `now`: at most `batch` files (a minute of records each).
    /// Returns how many files went.
    pub async fn expire(&self, now: u64, batch: usize) -> io::Result<usize> {
        let keep = self.shared.settings.keep_status;
        let cutoff = UNIX_EPOCH + Duration::from_millis(now.saturating_sub(keep));
        let files = self.store().done().files().await?;
        let old: Vec<done::Minute> = files
            .into_iter()
            .filter(|(_, written, _)| *written < cutoff)
            .map(|(m, _, _)| m)
            .take(batch)
            .collect();
        let n = old.len();
        self.store().done().remove(old.clone()).await?;
        let mut m = self.memory();
        for minute in old {
            m.tallies.drop_file(minute);
        }
        Ok(n)
    }

    /// Counts by state and domain.
    pub fn counts(&self) -> Counts {
        let m = self.memory();
        let states = m.states();
        Counts {
            by_state: State::ALL.iter().map(|&s| (s, count(&states, s))).collect(),
            by_domain: m.pending.domains.clone(),
            messages: m.pending.messages,
        }
    }

    /// A page of records: queued messages oldest first, then finished ones
    /// by minute of acceptance; and how many there are in all.
    pub async fn page(&self, offset: usize, limit: usize) -> io::Result<(usize, Vec<Record>)> {
        let (queued, files) = {
            let m = self.memory();
            (m.queued_ids(), m.tallies.files())
        };
        let finished: u64 = files.iter().map(|(_, n)| n).sum();
        let total = queued.len() + finished as usize;
        let mut page = Vec::new();
        let wanted: Vec<Id> = queued.iter().skip(offset).take(limit).copied().collect();
        for (_, r) in self.store().load(wanted).await {
            // Gone meanwhile (delivered): the page is one shorter.
            if let Ok(r) = r {
                page.push(r);
            }
        }
        // Then the finished records, skipping whole files before the offset.
        let mut skip = offset.saturating_sub(queued.len());
        for (minute, n) in files {
            if page.len() >= limit {
                break;
            }
            if skip >= n as usize {
                skip -= n as usize;
                continue;
            }
            let read = self.store().done().read(vec![minute]).await;
            let Some((_, Ok(contents))) = read.into_iter().next() else {
                continue;
            };
            let mut records = contents.records;
            records.sort_by_key(|r| r.id);
            let room = limit - page.len();
            page.extend(records.into_iter().skip(skip).take(room));
            skip = 0;
        }
        Ok((total, page))
    }
}
