//! Owning the terminal: the dashboard's event loop and the restore-on-every-exit guarantees.

use std::io;
use std::panic::PanicHookInfo;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};
use manners_events::{Control, Request, RunSummary, TrainEvent};
use ratatui::backend::Backend;
use ratatui::{DefaultTerminal, Terminal};

use crate::dashboard::{Dashboard, RunStatus};

/// How [`run_dashboard`] behaves.
#[derive(Clone, Debug)]
pub struct DashboardOptions {
    /// Minimum time between two redraws (default 100 ms: at most 10 frames a second).
    pub frame_interval: Duration,
    /// How long `crossterm` is polled for a key before the channel is drained again
    /// (default 25 ms).
    pub poll_interval: Duration,
    /// After the run finished or failed, keep the final screen until a key is pressed or this
    /// much time has passed. `None` waits for a key; `Some(Duration::ZERO)` returns at once.
    /// Default: 30 s.
    pub linger: Option<Duration>,
    /// Buckets kept per chart series (see [`crate::LossHistory`]). Default 2048.
    pub history_cap: usize,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            frame_interval: Duration::from_millis(100),
            poll_interval: Duration::from_millis(25),
            linger: Some(Duration::from_secs(30)),
            history_cap: crate::history::DEFAULT_HISTORY_CAP,
        }
    }
}

/// Why [`run_dashboard`] returned.
#[derive(Clone, Debug, PartialEq)]
pub enum DashboardEnd {
    /// The trainer sent `Finished`.
    Finished(RunSummary),
    /// The trainer sent `Failed`.
    Failed { step: u64, error: String },
    /// The event channel closed without a final event.
    Disconnected,
    /// The user pressed Ctrl-C twice: the caller should exit without waiting for the trainer
    /// (a stop was requested, but the trainer may still be busy).
    ForceQuit,
}

/// What [`run_dashboard`] hands back: how the run ended and the dashboard's final state (its
/// loss histories can feed `manners_report::plot_losses`).
#[derive(Clone, Debug)]
pub struct DashboardOutcome {
    pub end: DashboardEnd,
    pub dashboard: Dashboard,
}

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Keeps a panic hook installed; dropping it puts the previous hook back.
///
/// The hook first runs `restore` (so the terminal is usable and the panic message readable),
/// then the hook that was installed before. Install it with [`install_panic_hook`].
#[must_use = "the hook is removed when the guard is dropped"]
pub struct PanicHookGuard {
    previous: Option<Arc<Hook>>,
}

/// Installs a panic hook that calls `restore` and then the previously installed hook.
///
/// [`run_dashboard`] calls it with [`ratatui::restore`]; tests pass a fake.
pub fn install_panic_hook<F>(restore: F) -> PanicHookGuard
where
    F: Fn() + Sync + Send + 'static,
{
    let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
    let chained = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        restore();
        chained(info);
    }));
    PanicHookGuard {
        previous: Some(previous),
    }
}

/// Panic messages of threads other than the UI thread, caught while the dashboard owns the
/// terminal (printing them then would be lost on the alternate screen).
pub(crate) type Caught = Arc<Mutex<Vec<String>>>;

/// The hook [`run_dashboard`] installs: a panic on the UI thread restores the terminal and then
/// reports as usual; a panic on another thread (the trainer) leaves the terminal alone (the
/// dashboard keeps running and shows it) and is recorded in `caught`, to be shown on the
/// dashboard and printed once the terminal is restored.
pub(crate) fn install_ui_panic_hook<F>(restore: F, ui: ThreadId, caught: Caught) -> PanicHookGuard
where
    F: Fn() + Sync + Send + 'static,
{
    let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
    let chained = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui {
            restore();
            chained(info);
        } else {
            let mut c = caught.lock().unwrap_or_else(|e| e.into_inner());
            c.push(panic_message(info));
        }
    }));
    PanicHookGuard {
        previous: Some(previous),
    }
}

/// `thread 'name' panicked at file:line: message`, like the default hook's first line.
fn panic_message(info: &PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let payload = info.payload();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_string());
    match info.location() {
        Some(l) => format!(
            "thread '{name}' panicked at {}:{}: {msg}",
            l.file(),
            l.line()
        ),
        None => format!("thread '{name}' panicked: {msg}"),
    }
}

impl Drop for PanicHookGuard {
    fn drop(&mut self) {
        // The hook cannot be changed while this thread panics; it stays installed then (it
        // only restores the terminal, which is harmless to repeat).
        if std::thread::panicking() {
            return;
        }
        if let Some(previous) = self.previous.take() {
            // Drop our hook (it holds a clone of `previous`) before reinstalling the old one.
            drop(std::panic::take_hook());
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}

/// Restores the terminal when dropped: covers early returns (`?`) and unwinding.
struct RestoreGuard<F: FnMut()>(F);

impl<F: FnMut()> Drop for RestoreGuard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Runs the live dashboard until the run ends.
///
/// Takes over the terminal (raw mode, alternate screen), drains `rx`, redraws at most once
/// per `opts.frame_interval`, and forwards key requests to `control`. Returns when the run
/// finished or failed (after showing the final screen, see [`DashboardOptions::linger`]), when
/// the sender is dropped, or on a second Ctrl-C. The terminal is restored on every path:
/// normal return, I/O error, panic (a panic hook restores it before the message is printed).
pub fn run_dashboard(
    rx: Receiver<TrainEvent>,
    control: Control,
    opts: DashboardOptions,
) -> io::Result<DashboardOutcome> {
    let caught: Caught = Arc::default();
    let hook = install_ui_panic_hook(
        ratatui::restore,
        std::thread::current().id(),
        caught.clone(),
    );
    let result = {
        // `ratatui::try_init` adds its own restoring hook on top of ours; dropping `hook`
        // below removes both.
        let mut terminal: DefaultTerminal = ratatui::try_init()?;
        let _restore = RestoreGuard(ratatui::restore);
        let mut dash = Dashboard::with_history_cap(opts.history_cap);
        let input = &mut CrosstermInput;
        let end = event_loop(
            &mut terminal,
            &mut dash,
            &rx,
            &control,
            &opts,
            input,
            &caught,
        );
        drop(terminal);
        end.map(|end| DashboardOutcome {
            end,
            dashboard: dash,
        })
        // `_restore` restores the terminal here, on success and on error alike.
    };
    drop(hook);
    // What other threads reported while the terminal was ours.
    for msg in caught.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        eprintln!("{msg}");
    }
    result
}

/// Where key presses come from (crossterm in the real loop, a script in tests).
pub(crate) trait Input {
    /// Waits up to `timeout` for a terminal event.
    fn next(&mut self, timeout: Duration) -> io::Result<Option<Event>>;
}

struct CrosstermInput;

impl Input for CrosstermInput {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        if event::poll(timeout)? {
            event::read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The loop behind [`run_dashboard`], generic over the backend and the input for tests.
pub(crate) fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    dash: &mut Dashboard,
    rx: &Receiver<TrainEvent>,
    control: &Control,
    opts: &DashboardOptions,
    input: &mut dyn Input,
    caught: &Caught,
) -> io::Result<DashboardEnd>
where
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let draw = |terminal: &mut Terminal<B>, dash: &Dashboard| -> io::Result<()> {
        terminal
            .draw(|f| dash.render(f))
            .map(|_| ())
            .map_err(io::Error::other)
    };
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut over_since: Option<Instant> = None;
    loop {
        // Drain what the trainer sent (bounded, so a flood cannot starve the keyboard).
        for _ in 0..50_000 {
            match rx.try_recv() {
                Ok(ev) => {
                    dash.update(&ev);
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !dash.status().is_over() {
                        let c = caught.lock().unwrap_or_else(|e| e.into_inner());
                        dash.disconnect(c.last().cloned());
                        dirty = true;
                    }
                    break;
                }
            }
        }
        if dash.status().is_over() && over_since.is_none() {
            over_since = Some(Instant::now());
            // Show the final state at once.
            draw(terminal, dash)?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        if let Some(t) = over_since
            && (dash.exit_requested() || opts.linger.is_some_and(|l| t.elapsed() >= l))
        {
            return Ok(end_of(dash));
        }
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= opts.frame_interval) {
            draw(terminal, dash)?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        match input.next(opts.poll_interval)? {
            Some(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                if let Some(req) = dash.on_key(key) {
                    control.request(req);
                }
                if dash.force_quit() {
                    control.request(Request::Stop);
                    return Ok(DashboardEnd::ForceQuit);
                }
                dirty = true;
            }
            Some(Event::Resize(..)) => {
                terminal.autoresize().map_err(io::Error::other)?;
                dirty = true;
            }
            _ => {}
        }
    }
}

fn end_of(dash: &Dashboard) -> DashboardEnd {
    match dash.status() {
        RunStatus::Finished(s) => DashboardEnd::Finished(s.clone()),
        RunStatus::Failed { step, error } => DashboardEnd::Failed {
            step: *step,
            error: error.clone(),
        },
        _ => DashboardEnd::Disconnected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use manners_events::StepStats;
    use ratatui::backend::TestBackend;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    struct Script(VecDeque<Event>);

    impl Input for Script {
        fn next(&mut self, _timeout: Duration) -> io::Result<Option<Event>> {
            Ok(self.0.pop_front())
        }
    }

    fn key(c: char) -> Event {
        Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    fn fast() -> DashboardOptions {
        DashboardOptions {
            frame_interval: Duration::ZERO,
            poll_interval: Duration::from_millis(1),
            linger: Some(Duration::ZERO),
            ..Default::default()
        }
    }

    /// The panic hook is process-global: tests that install one take turns.
    static HOOK_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn panic_hook_restores_then_chains() {
        let _turn = HOOK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        thread_local! {
            // Per thread: tests running in parallel may panic while the hook is installed.
            static RESTORED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let restored = || RESTORED.with(|r| r.get());
        let guard = install_panic_hook(|| RESTORED.with(|r| r.set(r.get() + 1)));
        let result = std::panic::catch_unwind(|| panic!("boom inside the dashboard"));
        assert!(result.is_err());
        assert_eq!(restored(), 1, "restore must run on panic");
        drop(guard);
        // After the guard is dropped, our restore no longer runs.
        let _ = std::panic::catch_unwind(|| panic!("after the dashboard"));
        assert_eq!(restored(), 1);
    }

    #[test]
    fn trainer_panics_are_caught_not_restored() {
        let _turn = HOOK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        thread_local! {
            static RESTORED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let caught = Caught::default();
        let guard = install_ui_panic_hook(
            || RESTORED.with(|r| r.set(r.get() + 1)),
            std::thread::current().id(),
            caught.clone(),
        );
        // A panic on another thread (the trainer) is recorded; the terminal stays ours.
        let trainer = std::thread::Builder::new()
            .name("trainer".into())
            .spawn(|| panic!("shape mismatch [2, 3] vs [3, 2]"))
            .expect("spawn");
        assert!(trainer.join().is_err());
        let msgs = caught.lock().map(|m| m.clone()).unwrap_or_default();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("thread 'trainer' panicked at")
                    && m.ends_with("shape mismatch [2, 3] vs [3, 2]")),
            "{msgs:?}"
        );
        assert_eq!(RESTORED.with(|r| r.get()), 0);
        // A panic on the UI thread restores the terminal.
        let _ = std::panic::catch_unwind(|| panic!("ui bug"));
        assert_eq!(RESTORED.with(|r| r.get()), 1);
        drop(guard);
    }

    #[test]
    fn disconnect_shows_the_trainer_panic() {
        let (tx, rx) = mpsc::channel::<TrainEvent>();
        drop(tx);
        let caught = Caught::default();
        caught
            .lock()
            .expect("lock")
            .push("thread 'trainer' panicked at x.rs:1: boom".into());
        let mut term = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
        let mut dash = Dashboard::new();
        let mut input = Script(VecDeque::new());
        let end = event_loop(
            &mut term,
            &mut dash,
            &rx,
            &Control::new(),
            &fast(),
            &mut input,
            &caught,
        )
        .expect("loop");
        assert_eq!(end, DashboardEnd::Disconnected);
        assert_eq!(
            dash.status(),
            &RunStatus::Disconnected {
                reason: Some("thread 'trainer' panicked at x.rs:1: boom".into())
            }
        );
    }

    #[test]
    fn restore_guard_runs_on_unwind() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let result = std::panic::catch_unwind(move || {
            let _g = RestoreGuard(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            panic!("error path");
        });
        assert!(result.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn loop_forwards_keys_and_ends_on_finish() {
        let (tx, rx) = mpsc::channel();
        let control = Control::new();
        let mut term = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
        let mut dash = Dashboard::new();
        tx.send(TrainEvent::Step(StepStats {
            step: 1,
            total_steps: 2,
            loss: 1.0,
            ..Default::default()
        }))
        .expect("send");
        // Scripted keys: e (eval now), p (pause), then the trainer finishes.
        let mut input = Script(VecDeque::from([key('e'), key('p')]));
        let tx2 = tx.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx2.send(TrainEvent::Finished(RunSummary {
                steps: 2,
                reason: "completed".into(),
                ..Default::default()
            }))
            .expect("send");
        });
        let end = event_loop(
            &mut term,
            &mut dash,
            &rx,
            &control,
            &fast(),
            &mut input,
            &Caught::default(),
        )
        .expect("loop");
        handle.join().expect("join");
        assert!(matches!(end, DashboardEnd::Finished(ref s) if s.reason == "completed"));
        assert!(control.take_eval());
        assert!(control.is_paused());
        drop(tx);
    }

    #[test]
    fn final_screen_waits_for_a_key_without_linger() {
        let (tx, rx) = mpsc::channel();
        tx.send(TrainEvent::Failed {
            step: 3,
            error: "out of memory".into(),
        })
        .expect("send");
        // The run is over before any key: polls come back empty twice, then a key closes it.
        struct Slow(usize);
        impl Input for Slow {
            fn next(&mut self, _timeout: Duration) -> io::Result<Option<Event>> {
                self.0 += 1;
                Ok((self.0 > 2).then(|| key('x')))
            }
        }
        let mut input = Slow(0);
        let opts = DashboardOptions {
            linger: None,
            ..fast()
        };
        let mut term = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
        let mut dash = Dashboard::new();
        let end = event_loop(
            &mut term,
            &mut dash,
            &rx,
            &Control::new(),
            &opts,
            &mut input,
            &Caught::default(),
        )
        .expect("loop");
        assert_eq!(
            end,
            DashboardEnd::Failed {
                step: 3,
                error: "out of memory".into()
            }
        );
        assert_eq!(input.0, 3, "returned before the key");
        assert!(dash.exit_requested());
    }

    #[test]
    fn loop_ends_when_sender_dropped() {
        let (tx, rx) = mpsc::channel::<TrainEvent>();
        drop(tx);
        let mut term = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
        let mut dash = Dashboard::new();
        let end = event_loop(
            &mut term,
            &mut dash,
            &rx,
            &Control::new(),
            &fast(),
            &mut Script(VecDeque::new()),
            &Caught::default(),
        )
        .expect("loop");
        assert_eq!(end, DashboardEnd::Disconnected);
        assert_eq!(dash.status(), &RunStatus::Disconnected { reason: None });
    }

    #[test]
    fn double_ctrl_c_force_quits_and_requests_stop() {
        let (_tx, rx) = mpsc::channel::<TrainEvent>();
        let control = Control::new();
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        let mut input = Script(VecDeque::from([ctrl_c.clone(), ctrl_c]));
        let mut term = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
        let mut dash = Dashboard::new();
        let end = event_loop(
            &mut term,
            &mut dash,
            &rx,
            &control,
            &fast(),
            &mut input,
            &Caught::default(),
        )
        .expect("loop");
        assert_eq!(end, DashboardEnd::ForceQuit);
        assert!(control.should_stop());
    }
}
