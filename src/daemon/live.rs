//! Live fan-out of a session's events to whoever watches (`logs -f`, the dashboard): one broadcast channel per
//! session, created on first use, closed when the session's run ends. Slow subscribers lag and skip; the runner never
//! waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::core::session::{SessionId, SessionState};

const CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// One event line as the child wrote it (JSON).
    Line(Arc<str>),
    /// The run ended in this state.
    Ended(SessionState),
}

#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<SessionId, broadcast::Sender<LiveEvent>>>,
}

impl Hub {
    pub fn subscribe(&self, id: &SessionId) -> broadcast::Receiver<LiveEvent> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.entry(id.clone()).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe()
    }

    pub fn publish(&self, id: &SessionId, event: LiveEvent) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = channels.get(id) {
            let _ = tx.send(event);
        }
    }

    /// How many subscribers a session has now.
    pub fn subscribers(&self, id: &SessionId) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.get(id).map_or(0, |tx| tx.receiver_count())
    }

    /// Sends the end of a run and drops the channel (subscribers see it closed after the last event).
    pub fn end(&self, id: &SessionId, state: SessionState) {
        let tx = self.channels.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(tx) = tx {
            let _ = tx.send(LiveEvent::Ended(state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_lines_then_the_end() {
        let hub = Hub::default();
        let id: SessionId = "local/emoji/1".parse().unwrap();
        hub.publish(&id, LiveEvent::Line("nobody listens".into()));
        let mut a = hub.subscribe(&id);
        let mut b = hub.subscribe(&id);
        hub.publish(&id, LiveEvent::Line("{}".into()));
        hub.end(&id, SessionState::Succeeded);
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap(), LiveEvent::Line("{}".into()));
            assert_eq!(rx.recv().await.unwrap(), LiveEvent::Ended(SessionState::Succeeded));
            assert!(rx.recv().await.is_err());
        }
    }
}
