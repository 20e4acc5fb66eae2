//! `ferry apply` on a terminal: a pseudo-terminal (python's `pty`) captures everything ferry
//! writes, and a VT100 emulator (`pyte`, from tests/emulator/requirements.txt) replays it into
//! the screen a person would see: mid-run frames and the screen left at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{SRC, World, plan};

/// Runs `argv` in a pty of 120 × 40 and writes what it saw as JSON to `$PTY_OUT`: its exit
/// status, the raw stream, the screen every quarter second (when it changed) and at the end.
/// `$PTY_INTERRUPT_ON`: Ctrl-C once the screen shows this text (`$PTY_INTERRUPTS` times, a
/// tenth of a second apart). Kills the child at
/// `$PTY_TIMEOUT` seconds; the child also gets SIGHUP if this driver is killed (the pty closes).
const DRIVER: &str = r#"
import fcntl, json, os, pty, select, signal, struct, sys, termios, time
import pyte

COLS, ROWS = 120, 40
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    os.execv(argv[0], argv)
start = time.monotonic()
deadline = start + float(os.environ.get("PTY_TIMEOUT", "240"))
interrupt_on = os.environ.get("PTY_INTERRUPT_ON")
interrupts = int(os.environ.get("PTY_INTERRUPTS", "1"))
sent, sent_at = 0, 0.0
screen = pyte.Screen(COLS, ROWS)
stream = pyte.ByteStream(screen)
raw = bytearray()
frames, last_frame, last_at = [], None, 0.0
timed_out = interrupted = False

def frame(force=False):
    global last_frame, last_at
    now = time.monotonic() - start
    shown = [l.rstrip() for l in screen.display]
    if shown != last_frame and (force or now - last_at >= 0.25):
        frames.append({"t": round(now, 2), "screen": shown})
        last_frame, last_at = shown, now

while True:
    if time.monotonic() > deadline:
        timed_out = True
        os.kill(pid, signal.SIGKILL)
        break
    ready, _, _ = select.select([fd], [], [], 0.05)
    if ready:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        raw.extend(data)
        stream.feed(data)
    frame()
    if interrupt_on and sent < interrupts and time.monotonic() - sent_at > 0.1 and (
        sent > 0 or any(interrupt_on in l for l in screen.display)
    ):
        os.write(fd, b"\x03")
        sent, sent_at, interrupted = sent + 1, time.monotonic(), True
_, status = os.waitpid(pid, 0)
frame(force=True)
with open(os.environ["PTY_OUT"], "w") as f:
    json.dump({
        "exit": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "interrupted": interrupted,
        "raw": raw.decode("utf-8", "replace"),
        "frames": frames,
        "final": [l.rstrip() for l in screen.display],
    }, f)
"#;

/// What a run on a terminal showed.
struct Screen {
    exit: Option<i32>,
    raw: String,
    /// Seconds since the start, and the screen then.
    frames: Vec<(f64, Vec<String>)>,
    last: Vec<String>,
}

impl Screen {
    fn frame_text(lines: &[String]) -> String {
        lines.join("\n").trim_end().to_string()
    }
    fn last_text(&self) -> String {
        Self::frame_text(&self.last)
    }
}

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// `ferry ARGS` of world `w`, on a terminal.
fn on_terminal(w: &World, args: &[&str], interrupt_on: Option<(&str, u32)>) -> Screen {
    let ferry = w.command(args);
    let out = w.path("pty.json");
    let mut py = Command::new(python());
    py.arg("-c")
        .arg(DRIVER)
        .arg(ferry.get_program())
        .args(ferry.get_args());
    for (k, v) in ferry.get_envs() {
        match v {
            Some(v) => py.env(k, v),
            None => py.env_remove(k),
        };
    }
    py.current_dir(ferry.get_current_dir().expect("the world's directory"))
        .env("TERM", "xterm-256color")
        .env("PTY_OUT", &out)
        .env("PTY_TIMEOUT", "240")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some((text, times)) = interrupt_on {
        py.env("PTY_INTERRUPT_ON", text)
            .env("PTY_INTERRUPTS", times.to_string());
    }
    let mut child = py.spawn().expect("the pty driver starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            super::kill(&mut child);
            panic!("the pty driver did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the pty driver failed: {status}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("driver output"))
        .expect("driver JSON");
    assert_eq!(v["timed_out"], json!(false), "ferry finished in time");
    let lines = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("lines")
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let s = Screen {
        exit: v["exit"].as_i64().map(|c| c as i32),
        raw: v["raw"].as_str().unwrap_or_default().to_string(),
        frames: v["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .map(|f| (f["t"].as_f64().unwrap_or_default(), lines(&f["screen"])))
            .collect(),
        last: lines(&v["final"]),
    };
    eprintln!(
        "$ ferry {} (on a terminal)\n--- progress lines by time",
        args.join(" ")
    );
    for (t, f) in &s.frames {
        for l in progress_on(&Screen::frame_text(f)) {
            eprintln!("{t:6.2}s  {l}");
        }
    }
    eprintln!(
        "--- exit {:?}, {} frames\n--- final screen\n{}",
        s.exit,
        s.frames.len(),
        s.last_text()
    );
    s
}

/// What only the progress display draws: bar and spinner characters, the ETA, and counts
/// such as `3/12 steps` or `0/6 copies`.
fn progress_on(screen: &str) -> Vec<String> {
    let spinner = "⠁⠉⠙⠚⠒⠂⠲⠴⠤⠄⠦⠖⠐⠓⠋⠈";
    let count_of = |l: &str, what: &str| {
        l.match_indices(what).any(|(i, _)| {
            let before = l[..i].trim_end_matches(|c: char| c.is_ascii_digit());
            before.len() < i && before.ends_with('/')
        })
    };
    screen
        .lines()
        .filter(|l| {
            l.contains('█')
                || l.contains('░')
                || l.chars().next().is_some_and(|c| spinner.contains(c))
                || l.contains("eta ")
                || count_of(l, " steps")
                || count_of(l, " copies")
        })
        .map(str::to_string)
        .collect()
}

/// The screen at the end shows nothing the progress display draws.
fn assert_no_progress_left(last: &str) {
    let left = progress_on(last);
    assert!(
        left.is_empty(),
        "progress left on screen: {left:#?}\n{last}"
    );
}

/// A world of 6 snapshots whose copies take 4 s each, 3 at a time in the destination: two
/// rounds, the second waiting for the first's slots.
fn slow_copies() -> (World, String) {
    slow_copies_with(json!({}))
}

fn slow_copies_with(extra: Value) -> (World, String) {
    let mut config = json!({ "copy_seconds": 4.0, "max_pending_snapshot_copies": 3 });
    for (k, v) in extra.as_object().expect("config") {
        config[k] = v.clone();
    }
    let w = World::new(config);
    let src_key = w.key(SRC, "alias/source");
    w.snapshots(&src_key, 6, |_| true);
    let plan_file = w.write_plan(&plan(&[]));
    // ferry's own gate to the emulator's limit: copies wait for a slot, not for an error.
    let text = std::fs::read_to_string(w.path(&plan_file))
        .unwrap()
        .replace(
            "settings:\n",
            "settings:\n  quotas: { \"ec2:snapshot-copies-in-flight\": { in_flight: 3 } }\n",
        );
    std::fs::write(w.path(&plan_file), text).unwrap();
    (w, plan_file)
}

#[test]
fn a_run_on_a_terminal_shows_a_trustworthy_eta_and_leaves_no_bars_behind() {
    let (w, plan_file) = slow_copies();
    let s = on_terminal(&w, &["apply", "--yes", &plan_file], None);
    assert_eq!(s.exit, Some(0), "{}", s.last_text());

    // While copies were pending, never `eta 0s`; an ETA from their progress was shown.
    assert!(!s.raw.contains("eta 0s"), "`eta 0s` in the stream");
    let frames: Vec<String> = s
        .frames
        .iter()
        .map(|(_, f)| Screen::frame_text(f))
        .collect();
    let with_eta = frames
        .iter()
        .find(|f| {
            f.lines().any(|l| {
                l.split("eta ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .unwrap_or_else(|| panic!("no frame showed an ETA: {frames:#?}"));
    eprintln!("--- a frame with an ETA\n{with_eta}");
    // The migration's line: copies done of all, and their bytes.
    assert!(
        frames
            .iter()
            .any(|f| f.contains("nightly") && f.contains("/6 copies") && f.contains(" GiB")),
        "a frame shows the migration's copies and bytes: {frames:#?}"
    );

    // At the end: the summary, and nothing of the bars.
    let last = s.last_text();
    assert!(
        last.contains("run succeeded: "),
        "the summary is on screen:\n{last}"
    );
    assert_no_progress_left(&last);
}

#[test]
fn an_interrupted_run_on_a_terminal_leaves_no_bars_behind() {
    let (w, plan_file) = slow_copies();
    let s = on_terminal(&w, &["apply", "--yes", &plan_file], Some(("in flight", 1)));
    assert_eq!(s.exit, Some(130), "Ctrl-C exits 130:\n{}", s.last_text());
    let last = s.last_text();
    // The notice went above the bars, and the terminal's `^C` was cleared with them.
    assert!(
        last.contains("Interrupted: finishing the calls in flight"),
        "{last}"
    );
    assert!(!last.contains("^C"), "the echoed ^C is left:\n{last}");
    assert!(
        last.contains("run interrupted: "),
        "the summary is on screen:\n{last}"
    );
    assert!(!s.raw.contains("eta 0s"), "`eta 0s` in the stream");
    assert_no_progress_left(&last);
}

#[test]
fn a_failed_run_on_a_terminal_keeps_the_failure_and_no_bars() {
    let (w, plan_file) = slow_copies_with(json!({ "deny": ["ec2:CopySnapshot"] }));
    let s = on_terminal(&w, &["apply", "--yes", &plan_file], None);
    assert_eq!(
        s.exit,
        Some(1),
        "a denied copy fails the run:\n{}",
        s.last_text()
    );
    let last = s.last_text();
    // The failures are long: the end of the screen is the summary's errors.
    assert!(
        last.contains("error: nightly/"),
        "the failure stays:\n{last}"
    );
    assert!(last.contains("6 step(s) failed"), "{last}");
    assert!(s.raw.contains("run failed: "), "the run's summary line");
    assert!(!s.raw.contains("eta 0s"), "`eta 0s` in the stream");
    assert_no_progress_left(&last);
}

#[test]
fn a_run_stopped_at_once_on_a_terminal_leaves_no_bars_behind() {
    // A second Ctrl-C stops at once: no `run-finished`, the display is dropped. Every call
    // takes 300 ms, so the calls in flight are still going when it comes.
    let (w, plan_file) = slow_copies_with(json!({ "latency_ms": 300 }));
    let s = on_terminal(&w, &["apply", "--yes", &plan_file], Some(("in flight", 2)));
    assert_eq!(s.exit, Some(130), "Ctrl-C exits 130:\n{}", s.last_text());
    let last = s.last_text();
    assert!(
        last.contains("Stopped. Resume with `ferry resume"),
        "{last}"
    );
    assert_no_progress_left(&last);
}
