//! Admission tests: only circuits about to be created are paid for, a
//! refusal creates nothing, racing creators pay once.

use super::*;

/// An admission that grants `left` new circuits in all, and notes every
/// count it is asked for.
#[derive(Debug)]
struct Budget {
    left: std::sync::Mutex<usize>,
    asked: std::sync::Mutex<Vec<usize>>,
}

impl Budget {
    fn new(left: usize) -> Self {
        Self {
            left: std::sync::Mutex::new(left),
            asked: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn asked(&self) -> Vec<usize> {
        self.asked.lock().unwrap().clone()
    }
}

impl Admission for Budget {
    type Refusal = &'static str;

    fn admit(&self, count: usize) -> Result<(), &'static str> {
        self.asked.lock().unwrap().push(count);
        let mut left = self.left.lock().unwrap();
        *left = left.checked_sub(count).ok_or("budget spent")?;
        Ok(())
    }
}

#[tokio::test]
async fn admission_is_asked_only_for_circuits_about_to_be_created() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    r.acquire("old", "n").unwrap();
    let b = Budget::new(2);
    // Existing circuits, and calls refused for another reason, cost nothing.
    r.acquire_admitted("old", "n", &b).unwrap();
    assert!(matches!(
        r.acquire_admitted("bad name", "n", &b),
        Err(Refused::Core(CoreError::InvalidName { .. }))
    ));
    r.set_override_admitted("old", OverrideKind::Disabled, "ops", "why", None, &b)
        .await
        .unwrap();
    assert!(matches!(
        r.set_policy_admitted("new", &PolicySpec::default(), "", "why", &b)
            .await,
        Err(Refused::Core(CoreError::InvalidArgument(_)))
    ));
    assert_eq!(b.asked(), Vec::<usize>::new());

    // Each creation is asked for once; a refusal creates nothing.
    r.acquire_admitted("a", "n", &b).unwrap();
    r.set_policy_admitted("b", &PolicySpec::default(), "ops", "why", &b)
        .await
        .unwrap();
    assert_eq!(
        r.acquire_admitted("c", "n", &b),
        Err(Refused::Admission("budget spent"))
    );
    assert_eq!(
        r.set_override_admitted("d", OverrideKind::ForcedOpen, "ops", "why", None, &b)
            .await,
        Err(Refused::Admission("budget spent"))
    );
    assert_eq!(b.asked(), [1, 1, 1, 1]);

    // A watch asks once for all of its missing names, and creates none of
    // them when refused.
    let w = Budget::new(2);
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let err = r
        .watch_admitted(&names(&["a", "x", "y", "z"]), &w)
        .unwrap_err();
    assert_eq!(err, Refused::Admission("budget spent"));
    for name in ["c", "d", "x", "y", "z"] {
        assert!(r.get(name).is_err(), "{name} was created");
    }
    let _sub = r.watch_admitted(&names(&["a", "x", "x", "y"]), &w).unwrap();
    assert_eq!(w.asked(), [3, 2], "duplicates and existing names are free");
    assert!(r.get("x").is_ok() && r.get("y").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creators_pay_for_a_circuit_once() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    let b = Arc::new(Budget::new(1000));
    let barrier = Arc::new(Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (r, b, barrier) = (r.clone(), b.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                r.acquire_admitted("shared", &format!("node-{i}"), &*b)
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.asked(), [1], "only the creator pays");
    assert_eq!(r.stats().created, 1);
}
