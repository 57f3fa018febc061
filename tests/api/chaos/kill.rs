//! kill -9 of the relay, over and over, under load (`scripts/chaos/kill-9`).

use super::*;

/// `CHAOS_CYCLES` kills (10), `CHAOS_KILL_EVERY_SECONDS` apart (3), `CHAOS_DEVICES` devices (20),
/// `CHAOS_PUBLISHERS` publishers (8), `CHAOS_DRAIN_SECONDS` to deliver the rest at the end (60).
///
/// Each cycle: the relay serves for a few seconds while publishers publish and devices ack, then
/// it is killed with SIGKILL (no shutdown, no flush) and started again on the same data
/// directory. Each cycle asserts that every device came back (a `hello` on the new process) and
/// that publishes were accepted again. At the end every 202'd notification must have reached its
/// device at least once.
#[actix_web::test]
#[ignore = "chaos: run by scripts/chaos/kill-9"]
async fn kill_9_every_few_seconds_under_load_loses_nothing_202d() {
    let cycles: u32 = setting("CHAOS_CYCLES", 10);
    let every = Duration::from_secs_f64(setting("CHAOS_KILL_EVERY_SECONDS", 3.0));
    let devices: usize = setting("CHAOS_DEVICES", 20);
    let publishers: usize = setting("CHAOS_PUBLISHERS", 8);
    let drain: f64 = setting("CHAOS_DRAIN_SECONDS", 60.0);
    let began = Instant::now();

    let mut relay = Relay::start(LIFTED_LIMITS).await;
    let (mut load, logs) = Load::phones(&relay, devices).await;
    load.publish(publishers, &relay.token, "");

    // Each process of the relay, the first and one per kill: its devices come back and it
    // accepts publishes, it serves under load, and (but the last) it is killed.
    let mut started = Instant::now();
    let mut hellos = vec![0; logs.len()];
    let mut accepted = 0;
    for life in 0..=cycles {
        let deadline = started + Duration::from_secs(60);
        let devices_back = until(&load.roaming.progress, deadline, || {
            logs.iter().zip(&hellos).all(|(l, h)| l.hellos.get() > *h)
        })
        .await;
        assert!(
            devices_back,
            "start {life}: the devices did not come back within 60 s"
        );
        let devices_after = started.elapsed();
        let publishes_back = until(&load.roaming.progress, deadline, || {
            load.published.accepted() > accepted
        })
        .await;
        assert!(
            publishes_back,
            "start {life}: no publish accepted within 60 s"
        );
        let publishes_after = started.elapsed();
        // The chaos schedule itself: the load runs until the next kill.
        tokio::time::sleep_until((started + every).into()).await;
        if life == cycles {
            eprintln!(
                "kill-9 last start: every device back {:.2} s and publishes {:.2} s after it",
                devices_after.as_secs_f64(),
                publishes_after.as_secs_f64(),
            );
            break;
        }
        hellos = logs.iter().map(|l| l.hellos.get()).collect();
        accepted = load.published.accepted();
        load.relays.send_replace(Vec::new());
        let restart = relay.kill_9_and_restart().await;
        started = Instant::now();
        load.relays.send_replace(vec![relay.port()]);
        eprintln!(
            "kill-9 cycle {}/{cycles}: every device back {:.2} s and publishes {:.2} s after the \
             relay started; killed at {:.1} s; listening again in {:.2} s; 202'd so far {}, \
             received {}",
            life + 1,
            devices_after.as_secs_f64(),
            publishes_after.as_secs_f64(),
            began.elapsed().as_secs_f64(),
            restart.as_secs_f64(),
            accepted,
            load.received()
        );
    }
    load.stop_publishing().await;
    let drained = load.drain(drain).await;
    load.done();
    let tally = load.tally();
    eprintln!(
        "kill-9: {cycles} kills in {:.1} s (drained: {drained}); other publish outcomes {:?}; \
         device sockets dropped {}, closed {:?}",
        began.elapsed().as_secs_f64(),
        load.published.outcomes.borrow(),
        logs.iter().map(|l| l.drops.get()).sum::<u64>(),
        logs.iter().fold(BTreeMap::new(), |mut all, l| {
            for (code, n) in l.closes.borrow().iter() {
                *all.entry(*code).or_insert(0) += n;
            }
            all
        }),
    );
    tally.print("kill-9");
    tally.assert_nothing_lost();
}
