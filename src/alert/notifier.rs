//! Notifiers: `log` (a `tracing` event at the severity's level) and webhooks (one POST per
//! alert event, on a thread of their own so a slow hook never delays a flush; retried with
//! exponential backoff; a full queue drops the event and counts it).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::rule::{AlertRule, Severity, Target};
use crate::config::{NotifierConfig, WebhookFormat};
use crate::http::HttpClient;
use crate::record::AlertEvent;
use crate::telemetry::Telemetry;

/// Alert events waiting for one webhook.
const QUEUE_EVENTS: usize = 1000;
/// The first retry waits this long; each further one twice as long, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The running notifiers.
pub struct Notifiers {
    webhooks: Vec<Webhook>,
    telemetry: Arc<Telemetry>,
}

struct Webhook {
    name: String,
    tx: Sender<AlertEvent>,
    /// Set at close: retries stop waiting past it.
    deadline_tx: Sender<Instant>,
    done_rx: Receiver<()>,
    thread: JoinHandle<()>,
}

impl Notifiers {
    /// Starts one thread per webhook notifier, all sharing `client`.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        configs: &[NotifierConfig],
        client: &HttpClient,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<Notifiers> {
        let mut webhooks = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_EVENTS);
            let (deadline_tx, deadline_rx) = crossbeam_channel::bounded(1);
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            let worker = Worker {
                config: config.clone(),
                client: client.clone(),
                telemetry: telemetry.clone(),
                deadline_rx,
            };
            let thread = std::thread::Builder::new()
                .name(format!("tallyd-webhook-{i}"))
                .spawn(move || {
                    worker.run(rx);
                    let _ = done_tx.send(());
                })?;
            webhooks.push(Webhook {
                name: config.name.clone(),
                tx,
                deadline_tx,
                done_rx,
                thread,
            });
        }
        Ok(Notifiers {
            webhooks,
            telemetry,
        })
    }

    /// Notifiers that only log (no webhooks).
    pub fn log_only(telemetry: Arc<Telemetry>) -> Notifiers {
        Notifiers {
            webhooks: Vec::new(),
            telemetry,
        }
    }

    /// Hands one event to each of the rule's notifiers.
    pub fn notify(&self, rule: &AlertRule, event: &AlertEvent) {
        for target in &rule.notify {
            match target {
                Target::Log => log(rule.severity, event),
                Target::Webhook(i) => {
                    let Some(hook) = self.webhooks.get(*i) else {
                        continue;
                    };
                    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                        hook.tx.try_send(event.clone())
                    {
                        self.telemetry.notifier_error();
                        tracing::error!(notifier = %hook.name, rule = %event.rule, "webhook queue full: alert event dropped");
                    }
                }
            }
        }
    }

    /// Lets every webhook deliver what it holds, until `deadline`.
    pub fn close(self, deadline: Instant) {
        for hook in &self.webhooks {
            let _ = hook.deadline_tx.try_send(deadline);
        }
        for hook in self.webhooks {
            drop(hook.tx);
            match hook.done_rx.recv_deadline(deadline) {
                Ok(()) => {
                    let _ = hook.thread.join();
                }
                Err(_) => {
                    tracing::error!(notifier = %hook.name, "webhook did not finish before the shutdown deadline")
                }
            }
        }
    }
}

fn log(severity: Severity, e: &AlertEvent) {
    let value = e
        .value
        .map_or_else(|| "none".to_string(), |v| v.to_string());
    match severity {
        Severity::Info => {
            tracing::info!(rule = %e.rule, state = %e.state, metric = %e.name, stat = %e.stat, op = %e.op, threshold = e.threshold, value = %value, "alert")
        }
        Severity::Warning => {
            tracing::warn!(rule = %e.rule, state = %e.state, metric = %e.name, stat = %e.stat, op = %e.op, threshold = e.threshold, value = %value, "alert")
        }
        Severity::Critical => {
            tracing::error!(rule = %e.rule, state = %e.state, metric = %e.name, stat = %e.stat, op = %e.op, threshold = e.threshold, value = %value, "alert")
        }
    }
}

/// The body a webhook of `format` receives for `event`.
pub fn body(format: WebhookFormat, event: &AlertEvent) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Json => serde_json::to_value(event).unwrap_or_default(),
        WebhookFormat::Slack => {
            let tags: Vec<String> = event.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let value = event
                .value
                .map_or_else(|| "no value".to_string(), |v| v.to_string());
            serde_json::json!({
                "text": format!(
                    "[{}] {} {}: {}{{{}}} {} {} {} (value {})",
                    event.severity.to_uppercase(),
                    event.rule,
                    event.state,
                    event.name,
                    tags.join(","),
                    event.stat,
                    event.op,
                    event.threshold,
                    value,
                )
            })
        }
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

struct Worker {
    config: NotifierConfig,
    client: HttpClient,
    telemetry: Arc<Telemetry>,
    deadline_rx: Receiver<Instant>,
}

impl Worker {
    fn run(self, rx: Receiver<AlertEvent>) {
        let mut deadline: Option<Instant> = None;
        for event in rx.iter() {
            if deadline.is_none() {
                deadline = self.deadline_rx.try_recv().ok();
            }
            let body = body(self.config.format, &event);
            if !self.deliver(&body, &mut deadline) {
                self.telemetry.notifier_error();
                tracing::error!(notifier = %self.config.name, rule = %event.rule, "webhook failed: alert event not delivered");
            }
        }
    }

    /// POSTs with retries; false when every attempt failed (or the deadline passed).
    fn deliver(&self, body: &[u8], deadline: &mut Option<Instant>) -> bool {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0..=self.config.retries {
            match self.client.post_json(
                &self.config.url,
                &self.config.headers,
                body,
                false,
                self.config.timeout,
            ) {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(notifier = %self.config.name, error = %e, attempt, "webhook POST failed")
                }
            }
            if attempt == self.config.retries {
                break;
            }
            // Wait for the backoff, unless a shutdown deadline arrives meanwhile.
            if deadline.is_none() {
                *deadline = self.deadline_rx.recv_timeout(backoff).ok();
            } else {
                std::thread::sleep(backoff);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        false
    }
}
