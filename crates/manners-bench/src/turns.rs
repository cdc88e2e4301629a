//! Turn-taking between the two processes of a paired measurement (manners' training step and
//! PyTorch's, same shapes), so that both see the machine in the same seconds.
//!
//! Run one after the other, each process measures its own stretch of a shared machine, and a
//! slow minute lands on one side of a ratio only. With turns, both processes start together and
//! a referee (the `manners bench` parent) lets one of them run at a time: a player holds the
//! machine from the moment it is granted a turn until it hands it back, and waits, idle, in
//! between. Both training sides take the same turns: building the model, the whole warm-up,
//! each timed step (PyTorch's: one step of each of its variants), the matmul peak. So manners'
//! timed step `i` runs right between PyTorch's steps `i - 1` and `i`, seconds apart at most.
//!
//! The protocol, over one localhost TCP connection per player (the address in [`TURNS_ENV`];
//! a Python player is `scripts/bench/torch_bench.py`): the player connects and sends one tag
//! byte, then waits for a grant (`g`); it hands the turn back by sending `r` and waiting for the
//! next grant. A player that closes its connection (its process ended, or failed) is done. The
//! referee grants turns round-robin in tag order (`m` for manners before `t` for PyTorch).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable that holds the referee's address (`127.0.0.1:port`).
pub const TURNS_ENV: &str = "MANNERS_BENCH_TURNS";

const GRANT: u8 = b'g';
const RELEASE: u8 = b'r';

/// This process's connection to the referee, when it runs as a player.
static PLAYER: Mutex<Option<TcpStream>> = Mutex::new(None);

/// Joins the referee named in [`TURNS_ENV`] as player `tag` and waits for the first turn; without
/// the variable, does nothing (the process runs freely). Call it before any work worth timing.
pub fn join(tag: u8) -> io::Result<()> {
    match std::env::var(TURNS_ENV) {
        Ok(addr) => join_at(&addr, tag),
        Err(_) => Ok(()),
    }
}

/// [`join`] the referee at `addr`.
pub fn join_at(addr: &str, tag: u8) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(&[tag])?;
    wait_for_grant(&mut stream)?;
    *PLAYER.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
    Ok(())
}

/// Hands the machine to the other player and waits for the next turn; a no-op when this process
/// did not [`join`]. A referee that went away lets the process run freely from then on.
pub fn pass() {
    let mut guard = PLAYER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(stream) = guard.as_mut() else {
        return;
    };
    let ok = stream.write_all(&[RELEASE]).is_ok() && wait_for_grant(stream).is_ok();
    if !ok {
        *guard = None;
    }
}

fn wait_for_grant(stream: &mut TcpStream) -> io::Result<()> {
    let mut b = [0u8];
    stream.read_exact(&mut b)?;
    if b[0] == GRANT {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected a grant from the bench referee, got byte {}", b[0]),
        ))
    }
}

/// The parent's side: hands out turns to the players that connect to [`Referee::addr`].
pub struct Referee {
    listener: TcpListener,
}

/// What one player did under a [`Referee`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Played {
    pub tag: u8,
    /// Turns granted, the first one included.
    pub turns: usize,
}

impl Referee {
    pub fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    /// The address players connect to (the value of [`TURNS_ENV`]).
    pub fn addr(&self) -> io::Result<String> {
        Ok(self.listener.local_addr()?.to_string())
    }

    /// Waits until every expected player has connected, or its process ended without connecting
    /// (`expected` pairs each tag with a test of whether that player's process has finished);
    /// then grants turns round-robin in tag order until every connected player has hung up.
    /// Returns the connected players in tag order with their turn counts; the log of grants
    /// (tags in order) goes to `log`.
    pub fn run(
        self,
        expected: &[(u8, &dyn Fn() -> bool)],
        log: &mut Vec<u8>,
    ) -> io::Result<Vec<Played>> {
        let mut players: Vec<(u8, TcpStream)> = Vec::new();
        loop {
            let waiting = expected
                .iter()
                .filter(|(tag, finished)| !players.iter().any(|(t, _)| t == tag) && !finished())
                .count();
            if waiting == 0 {
                break;
            }
            match self.listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false)?;
                    s.set_nodelay(true)?;
                    let mut tag = [0u8];
                    if s.read_exact(&mut tag).is_ok() {
                        players.push((tag[0], s));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        players.sort_by_key(|(t, _)| *t);
        let mut played: Vec<Played> = players
            .iter()
            .map(|(tag, _)| Played {
                tag: *tag,
                turns: 0,
            })
            .collect();
        let mut live: Vec<bool> = vec![true; players.len()];
        while live.iter().any(|&l| l) {
            for (i, (tag, s)) in players.iter_mut().enumerate() {
                if !live[i] {
                    continue;
                }
                // A write to a player that has hung up, or a read that ends, means it is done.
                let mut b = [0u8];
                let granted = s.write_all(&[GRANT]).is_ok();
                if granted {
                    played[i].turns += 1;
                    log.push(*tag);
                }
                if !granted || s.read_exact(&mut b).is_err() || b[0] != RELEASE {
                    live[i] = false;
                }
            }
        }
        Ok(played)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// What the players did in their turns, in order: (tag, index of the turn's action).
    type Trace = Arc<Mutex<Vec<(u8, usize)>>>;

    /// A player's process: given the referee's address and the trace; `None` for one that ends
    /// without ever joining.
    type Process = Option<Box<dyn FnOnce(String, Trace) + Send>>;

    /// A player that takes `turns` turns, recording each in `trace`.
    fn player(tag: u8, turns: usize) -> Process {
        Some(Box::new(move |addr, trace| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[tag]).unwrap();
            for i in 0..turns {
                wait_for_grant(&mut s).unwrap();
                trace.lock().unwrap().push((tag, i));
                if i + 1 < turns {
                    s.write_all(&[RELEASE]).unwrap();
                }
            }
            // Dropping the stream ends the last turn.
        }))
    }

    /// Runs each process on its own thread (started in the order given) under one referee; the
    /// referee's result, its log of grants and the players' trace.
    fn play(processes: Vec<(u8, Process)>) -> (Vec<Played>, Vec<u8>, Vec<(u8, usize)>) {
        let referee = Referee::bind().unwrap();
        let addr = referee.addr().unwrap();
        let trace: Trace = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let mut done = Vec::new();
        for (tag, process) in processes {
            let flag = Arc::new(AtomicBool::new(process.is_none()));
            if let Some(run) = process {
                let (addr, trace, flag) = (addr.clone(), trace.clone(), flag.clone());
                threads.push(std::thread::spawn(move || {
                    run(addr, trace);
                    flag.store(true, Ordering::SeqCst);
                }));
            }
            done.push((tag, flag));
        }
        let finished: Vec<Box<dyn Fn() -> bool>> = done
            .iter()
            .map(|(_, flag)| {
                let flag = flag.clone();
                Box::new(move || flag.load(Ordering::SeqCst)) as Box<dyn Fn() -> bool>
            })
            .collect();
        let expected: Vec<(u8, &dyn Fn() -> bool)> = done
            .iter()
            .zip(&finished)
            .map(|((tag, _), f)| (*tag, f.as_ref()))
            .collect();
        let mut log = Vec::new();
        let played = referee.run(&expected, &mut log).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let trace = trace.lock().unwrap().clone();
        (played, log, trace)
    }

    fn played(tag: u8, turns: usize) -> Played {
        Played { tag, turns }
    }

    #[test]
    fn players_alternate_one_at_a_time_and_the_longer_one_finishes_alone() {
        // PyTorch's player connects first: the order of turns must still be by tag.
        let late = player(b'm', 3).unwrap();
        let late: Process = Some(Box::new(move |addr, trace| {
            std::thread::sleep(Duration::from_millis(50));
            late(addr, trace)
        }));
        let (played_, log, trace) = play(vec![(b't', player(b't', 5)), (b'm', late)]);
        assert_eq!(played_, vec![played(b'm', 3), played(b't', 5)]);
        assert_eq!(log, b"mtmtmttt".to_vec());
        // What the players saw, in order: never two turns of one player while the other one
        // still had turns to take, because each waited for its grant.
        let seen: Vec<u8> = trace.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(seen, b"mtmtmttt".to_vec());
    }

    #[test]
    fn time_median_runs_the_warm_up_in_one_turn_and_each_timed_run_in_its_own() {
        let manners: Process = Some(Box::new(|addr, trace| {
            join_at(&addr, b'm').unwrap();
            trace.lock().unwrap().push((b'm', 0)); // the first turn: building the model
            let mut calls = 0;
            crate::time_median(2, 3, || {
                calls += 1;
                trace.lock().unwrap().push((b'm', calls));
            });
            // Stop taking turns, as the end of the process does.
            *PLAYER.lock().unwrap() = None;
        }));
        let (played_, _, trace) = play(vec![(b'm', manners), (b't', player(b't', 5))]);
        // Joining, the warm-up (two calls) and three timed runs: five turns, as PyTorch's side.
        assert_eq!(played_, vec![played(b'm', 5), played(b't', 5)]);
        let expected: Vec<(u8, usize)> = vec![
            (b'm', 0),
            (b't', 0),
            (b'm', 1),
            (b'm', 2),
            (b't', 1),
            (b'm', 3),
            (b't', 2),
            (b'm', 4),
            (b't', 3),
            (b'm', 5),
            (b't', 4),
        ];
        assert_eq!(trace, expected);
    }

    #[test]
    fn a_player_whose_process_ends_without_joining_is_not_waited_for() {
        // PyTorch's process "failed" before connecting.
        let (played_, log, _) = play(vec![(b'm', player(b'm', 2)), (b't', None)]);
        assert_eq!(played_, vec![played(b'm', 2)]);
        assert_eq!(log, b"mm".to_vec());
    }
}
