//! Following a run: long-poll its events (`?after=SEQ&wait=S`), fold each new one into a
//! [`Progress`] and show it, until nothing more will happen. Robust to a server that
//! ignores `after` and `wait` (events already seen are dropped; an empty answer that came
//! back at once is followed by a short pause, not a busy loop) and to brief outages once
//! following has begun.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::client::Api;
use crate::error::CliError;
use crate::progress::{Ending, Progress};
use crate::render::{self, Style};

/// How long one long-poll may wait on the server (API Gateway allows 30 s).
const LONG_POLL: Duration = Duration::from_secs(20);
/// An answer quicker than this with nothing new means the server did not wait.
const QUICK: Duration = Duration::from_millis(200);
/// Pause before asking again after such an answer.
const PAUSE: Duration = Duration::from_millis(250);
/// How often the live frame is redrawn (spinner, countdowns).
const TICK: Duration = Duration::from_millis(100);
/// Transient errors in a row tolerated once following has begun.
const RETRIES: u32 = 5;

/// How a followed run is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a terminal: a frame of step lines redrawn in place.
    Live { color: bool },
    /// One plain line per change.
    Plain,
    /// Every event as a JSON line.
    JsonLines,
    /// Nothing while following (the caller prints the final run).
    Quiet,
}

type Interrupt = Pin<Box<dyn Future<Output = ()>>>;

/// Follow run `id` until it ends (or, for a `failed` run, until its saga ends); returns
/// the run as last seen.
pub async fn follow(api: &Api, id: &str, mode: Mode) -> Result<Progress, CliError> {
    let mut watch = Watch {
        progress: Progress::new(id),
        live: match mode {
            Mode::Live { color } => Some(Live::new(color)),
            _ => None,
        },
        interrupt: Box::pin(async {
            // Without a Ctrl-C handler (it could not be installed), never interrupt.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }),
    };
    let result = watch.run(api, mode).await;
    if let Some(live) = &mut watch.live {
        live.finish(&watch.progress)?;
    }
    result.map(|()| watch.progress)
}

struct Watch {
    progress: Progress,
    live: Option<Live>,
    interrupt: Interrupt,
}

impl Watch {
    async fn run(&mut self, api: &Api, mode: Mode) -> Result<(), CliError> {
        let id = self.progress.run_id.clone();
        let mut answered = false;
        let mut failures = 0;
        let mut long_poll = LONG_POLL;
        loop {
            let asked = Instant::now();
            let after = self.progress.last_seq;
            let fresh = match self.wait(api.events(&id, after, long_poll)).await? {
                Ok(events) => {
                    answered = true;
                    failures = 0;
                    self.show(&events, mode)?
                }
                // A server that waits less long says so: ask for half as long.
                Err(CliError::Api {
                    status: 400, code, ..
                }) if code == "invalid_wait" && !long_poll.is_zero() => {
                    long_poll = Duration::from_secs(long_poll.as_secs() / 2);
                    continue;
                }
                Err(e) if answered && transient(&e) && failures < RETRIES => {
                    failures += 1;
                    self.wait(tokio::time::sleep(backoff(failures))).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.progress.ending() {
                Ending::Ended => return Ok(()),
                // Whether a saga follows is the server's to say (it knows which tools
                // compensate): once it calls the failed run settled, the watch ends.
                Ending::AwaitingSaga { .. } => {
                    if self.wait(api.settled(&id)).await?? {
                        return Ok(());
                    }
                }
                Ending::Running => {}
            }
            if fresh == 0 && asked.elapsed() < QUICK {
                self.wait(tokio::time::sleep(PAUSE)).await?;
            }
        }
    }

    /// Fold in and show the events not seen yet; returns how many there were.
    fn show(&mut self, events: &[Value], mode: Mode) -> Result<usize, CliError> {
        let mut fresh = 0;
        let stdout = io::stdout();
        let mut out = stdout.lock();
        for event in events {
            if !self.progress.apply(event) {
                continue;
            }
            fresh += 1;
            match mode {
                Mode::Plain => {
                    for line in render::event_lines(event, &self.progress) {
                        writeln!(out, "{line}")?;
                    }
                }
                Mode::JsonLines => writeln!(out, "{event}")?,
                Mode::Live { .. } | Mode::Quiet => {}
            }
        }
        out.flush()?;
        drop(out);
        if fresh > 0 {
            if let Some(live) = &mut self.live {
                live.draw(&self.progress)?;
            }
        }
        Ok(fresh)
    }

    /// Await `fut`, redrawing the live frame meanwhile; Ctrl-C stops following.
    async fn wait<F: Future>(&mut self, fut: F) -> Result<F::Output, CliError> {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                _ = tick.tick(), if self.live.is_some() => {
                    if let Some(live) = &mut self.live {
                        live.draw(&self.progress)?;
                    }
                }
                _ = &mut self.interrupt => {
                    return Err(CliError::Interrupted { run_id: self.progress.run_id.clone() });
                }
            }
        }
    }
}

/// Worth asking again: no answer, or the server is busy or restarting.
fn transient(e: &CliError) -> bool {
    matches!(
        e,
        CliError::Connection { .. }
            | CliError::Protocol { .. }
            | CliError::Api {
                status: 429 | 500 | 502 | 503 | 504,
                ..
            }
    )
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 << failures.min(4))
}

/// The frame on a terminal, redrawn in place: the cursor goes back up over the lines
/// drawn last time, and line wrapping is off while drawing so a long line is clipped at
/// the terminal's edge instead of pushing the frame down.
struct Live {
    color: bool,
    drawn: usize,
    frame: usize,
}

impl Live {
    fn new(color: bool) -> Live {
        Live {
            color,
            drawn: 0,
            frame: 0,
        }
    }

    fn draw(&mut self, p: &Progress) -> io::Result<()> {
        self.frame += 1;
        let style = Style {
            now: Utc::now(),
            frame: self.frame,
            color: self.color,
        };
        // One row stays free for the cursor, so the frame never scrolls the screen (a
        // terminal that reports no size is taken as tall enough).
        let rows = terminal_size::terminal_size()
            .map(|(_, h)| usize::from(h.0))
            .filter(|&h| h > 0)
            .unwrap_or(usize::MAX);
        self.paint(&render::frame_within(
            p,
            &style,
            rows.saturating_sub(1).max(1),
        ))
    }

    fn paint(&mut self, lines: &[String]) -> io::Result<()> {
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\x1b[{}F", self.drawn));
        } else {
            buf.push_str("\x1b[?25l");
        }
        buf.push_str("\x1b[?7l");
        for line in lines {
            buf.push_str("\x1b[2K");
            buf.push_str(line);
            buf.push('\n');
        }
        buf.push_str("\x1b[J\x1b[?7h");
        self.drawn = lines.len();
        let mut out = io::stdout().lock();
        out.write_all(buf.as_bytes())?;
        out.flush()
    }

    /// The last frame, then how the run ended; the cursor is shown again.
    fn finish(&mut self, p: &Progress) -> io::Result<()> {
        self.draw(p)?;
        let mut out = io::stdout().lock();
        if crate::progress::is_final(&p.status) || p.status == "failed" {
            writeln!(out, "{}", render::summary(p, self.color))?;
        }
        write!(out, "\x1b[?25h")?;
        out.flush()
    }
}
