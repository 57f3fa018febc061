//! The data directory's disk filling up under load (`scripts/chaos/disk-full`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A small tmpfs mounted for the test (it needs the right to mount: root, or a user namespace
/// that allows it); unmounted when dropped.
struct SmallDisk {
    mount: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB on a fresh directory. Fails the test, loudly, where mounting
    /// is not allowed.
    fn mount(mib: u64) -> SmallDisk {
        let mount = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(mount.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "disk-full mounts a {mib} MiB tmpfs for the data directory, and this machine refused \
             (run it as root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        SmallDisk { mount }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Fills what is left of the disk with a file, until the write fails with ENOSPC; its size.
    fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0xa5_u8; 64 * 1024];
        let mut written = 0;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Whatever a smaller write still fits, too.
        for size in [4096_usize, 512, 1] {
            while file.write(&chunk[..size]).is_ok_and(|n| n > 0) {
                written += size as u64;
            }
        }
        written
    }

    /// Gives the space back.
    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    /// Bytes free on it.
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily, so that a test that failed with the relay still running leaves no mount behind.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Waits up to `within` until `condition` holds, checking every 50 ms (the publishers' answers
/// come from another process: there is no event to wait on); whether it did.
async fn poll(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// `CHAOS_DISK_MIB` of tmpfs (64), `CHAOS_DISK_CYCLES` times full (2), each for
/// `CHAOS_FULL_SECONDS` after the first 503 (5), `CHAOS_CYCLE_SECONDS` of load before each and
/// after the last (3), `CHAOS_DEVICES` (20), `CHAOS_PUBLISHERS` (8), `CHAOS_DRAIN_SECONDS` (60).
///
/// The relay's data directory (the SQLite database and its WAL, the keys) is on a small tmpfs.
/// Under load, a file takes every free byte of it: publishes must then be answered 503 (never
/// another 5xx), the relay must stay up and keep its open sockets. The file is removed: publishes
/// must be accepted again, without a restart. At the end every 202'd notification reached its
/// device, and the relay, killed with SIGKILL, starts again on the same directory.
#[actix_web::test]
#[ignore = "chaos: run by scripts/chaos/disk-full"]
async fn a_full_disk_answers_503_loses_nothing_202d_and_the_relay_recovers() {
    let mib: u64 = setting("CHAOS_DISK_MIB", 64);
    let cycles: u32 = setting("CHAOS_DISK_CYCLES", 2);
    let full_for = Duration::from_secs_f64(setting("CHAOS_FULL_SECONDS", 5.0));
    let between = Duration::from_secs_f64(setting("CHAOS_CYCLE_SECONDS", 3.0));
    let devices: usize = setting("CHAOS_DEVICES", 20);
    let publishers: usize = setting("CHAOS_PUBLISHERS", 8);
    let drain: f64 = setting("CHAOS_DRAIN_SECONDS", 60.0);
    let began = Instant::now();

    let disk = SmallDisk::mount(mib);
    let dir = tempfile::tempdir_in(disk.path()).unwrap();
    let mut relay = Relay::start_in(dir, LIFTED_LIMITS).await;
    let (mut load, logs) = Load::phones(&relay, devices).await;
    assert!(load.all_connected().await, "the devices did not connect");
    // Half a kilobyte per notification, so that the database grows as a real one does.
    load.publish(publishers, &relay.token, &"x".repeat(512));

    let rejected = |load: &Load| {
        load.published
            .outcomes
            .borrow()
            .get("HTTP 503")
            .copied()
            .unwrap_or(0)
    };
    for cycle in 1..=cycles {
        tokio::time::sleep(between).await;
        let (accepted, refused) = (load.published.accepted(), rejected(&load));
        let filled = disk.fill();
        let full_at = Instant::now();
        // The relay still has pages in its WAL and database to write into; once they are used
        // up, a commit fails and its publishers are answered 503.
        let answered_503 = poll(Duration::from_secs(60), || rejected(&load) > refused).await;
        assert!(
            answered_503,
            "cycle {cycle}: no publish answered 503 within 60 s of the disk filling up \
             ({} accepted meanwhile)",
            load.published.accepted() - accepted
        );
        let first_503 = full_at.elapsed();
        let accepted_at_503 = load.published.accepted();
        tokio::time::sleep(full_for).await;
        assert!(
            relay.running(),
            "cycle {cycle}: the relay died of a full disk"
        );
        let while_full = (
            load.published.accepted() - accepted_at_503,
            rejected(&load) - refused,
        );
        let (received, health) = (load.received(), relay.live().await);
        disk.free();
        let freed_at = Instant::now();
        let recovered = poll(Duration::from_secs(30), || {
            load.published.accepted() > accepted_at_503 + while_full.0
        })
        .await;
        assert!(
            recovered,
            "cycle {cycle}: no publish accepted within 30 s of the space returning"
        );
        eprintln!(
            "disk-full cycle {cycle}/{cycles}: filled {:.1} MiB; first 503 after {:.2} s; \
             while full {} accepted and {} answered 503, /health/live {health}; accepted again \
             {:.2} s after the space returned; received so far {received}",
            filled as f64 / 1_048_576.0,
            first_503.as_secs_f64(),
            while_full.0,
            while_full.1,
            freed_at.elapsed().as_secs_f64(),
        );
    }
    let accepted = load.published.accepted();
    tokio::time::sleep(between).await;
    assert!(
        load.published.accepted() > accepted,
        "no publish accepted after the last recovery"
    );
    load.stop_publishing().await;
    let drained = load.drain(drain).await;
    let tally = load.tally();
    let outcomes = load.published.outcomes.borrow().clone();
    eprintln!(
        "disk-full: {cycles} times full in {:.1} s (drained: {drained}); publish outcomes other \
         than 202 {outcomes:?}; device sockets dropped {}; {:.1} MiB free at the end",
        began.elapsed().as_secs_f64(),
        logs.iter().map(|l| l.drops.get()).sum::<u64>(),
        disk.available() as f64 / 1_048_576.0,
    );
    tally.print("disk-full");
    assert!(relay.running(), "the relay exited");
    load.published.assert_no_5xx_but_503();
    tally.assert_nothing_lost();
    // What it wrote while the disk was full left the store sound: it starts again on it.
    relay.kill_9_and_restart().await;
    assert_eq!(
        relay.live().await,
        200,
        "the relay's health after a restart"
    );
    load.done();
    drop(relay);
}
