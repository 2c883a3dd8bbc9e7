//! Tests of the stage counters and their exposition.

use super::*;

fn labels(stage: &str, digest: usize) -> Labels {
    Labels {
        stage: stage.into(),
        kind: StageKind::Audit,
        plugin: "p".into(),
        version: "1".into(),
        digest: format!("{digest:012x}"),
    }
}

#[test]
fn counters_of_versions_no_chain_holds_are_bounded() {
    let m = StageMetrics::default();
    let held = m.counters(labels("a", 0));
    for d in 1..=20 {
        m.counters(labels("a", d))
            .invocations
            .fetch_add(1, Ordering::Relaxed);
    }
    let versions = |m: &StageMetrics, stage: &str| {
        let stages = m.stages.lock().unwrap();
        stages
            .iter()
            .filter(|c| c.labels.stage == stage)
            .map(|c| c.labels.digest.clone())
            .collect::<Vec<_>>()
    };
    let a = versions(&m, "a");
    assert_eq!(a.len(), KEPT_VERSIONS_PER_STAGE);
    // The held (serving) version stays; of the others the newest are kept.
    assert_eq!(a[0], held.labels.digest);
    assert_eq!(a.last().unwrap(), &format!("{:012x}", 20));
    assert_eq!(m.snapshot("a").invocations, 7);
    // Across stage names too, held versions always stay.
    for n in 0..KEPT_VERSIONS + 10 {
        m.counters(labels(&format!("s{n}"), n));
    }
    assert!(m.stages.lock().unwrap().len() <= KEPT_VERSIONS);
    assert_eq!(versions(&m, "a")[0], held.labels.digest);
}

#[test]
fn exposition_has_every_family_and_labels() {
    let m = StageMetrics::default();
    let c = m.counters(Labels {
        stage: "tok\"ens".into(),
        kind: StageKind::Credential,
        plugin: "p".into(),
        version: "1".into(),
        digest: "abc".into(),
    });
    c.invocations.fetch_add(3, Ordering::Relaxed);
    c.failure(FailureKind::Timeout);
    c.observe_call(std::time::Duration::from_micros(3));
    c.observe_call(std::time::Duration::from_micros(40));
    c.observe_call(std::time::Duration::from_secs(1));
    c.observe_memory(3 << 20);
    c.observe_memory(1 << 20);
    m.reload(ReloadResult::Ok, 2);
    let text = m.render_prometheus();
    assert!(text.contains(
        "hawser_plugin_invocations_total{stage=\"tok\\\"ens\",kind=\"credential\",plugin=\"p\",version=\"1\",digest=\"abc\"} 3"
    ));
    assert!(text.contains("reason=\"timeout\"} 1"));
    // Cumulative buckets: 3 us falls in le=5us, 40 us in le=50us, 1 s past them all.
    let bucket = |le: &str| {
        let key = format!("digest=\"abc\",le=\"{le}\"}} ");
        let line = text.lines().find(|l| l.contains(&key)).expect(le);
        line.rsplit(' ').next().unwrap().to_owned()
    };
    assert_eq!(bucket("0.000002"), "0");
    assert_eq!(bucket("0.000005"), "1");
    assert_eq!(bucket("0.00005"), "2");
    assert_eq!(bucket("0.1"), "2");
    assert_eq!(bucket("+Inf"), "3");
    assert!(text.contains("hawser_plugin_call_seconds_count{stage=\"tok\\\"ens\""));
    assert!(text.contains("} 1.000043\n"), "sum of the three calls");
    assert!(text.contains("hawser_plugin_reloads_total{result=\"ok\"} 1"));
    assert!(text.contains("hawser_plugin_chain_generation 2"));
    assert!(text.contains("hawser_plugin_memory_peak_bytes{stage=\"tok\\\"ens\",kind=\"credential\",plugin=\"p\",version=\"1\",digest=\"abc\"} 3145728"));
    assert_eq!(m.snapshot("tok\"ens").failures(FailureKind::Timeout), 1);
}
