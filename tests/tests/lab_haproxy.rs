//! T2: the HAProxy runtime-API driver against the lab's real HAProxy: a member goes in (in
//! maint), to ready, to drain, to maint and out; names that could inject commands never reach
//! the socket; a missing pool is reported.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::lb::haproxy::{Endpoint, HaproxyRuntime};
use flotilla::lb::{LbError, LoadBalancer, MemberState};
use flotilla_tests::Lab;

async fn member(lb: &HaproxyRuntime, pool: &str, name: &str) -> flotilla::lb::MemberStats {
    lb.members(pool)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap()
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_member_goes_through_its_states_on_the_lab_haproxy() {
    let lab = Lab::from_env();
    let lb = HaproxyRuntime::new(Endpoint::Unix(
        lab.get("FLOTILLA_LAB_HAPROXY_SOCKET").into(),
    ));
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    assert!(lb.pool_exists(&pool).await.unwrap());
    assert!(!lb.pool_exists("no_such_pool").await.unwrap());
    let name = format!("t{}", std::process::id());
    let before = lb.members(&pool).await.unwrap().len();

    lb.member_add(&pool, &name, "10.77.0.246:80".parse().unwrap())
        .await
        .unwrap();
    lb.member_add(&pool, &name, "10.77.0.246:80".parse().unwrap())
        .await
        .unwrap(); // idempotent
    let err = lb
        .member_add(&pool, &name, "10.77.0.245:80".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("exists at 10.77.0.246:80"),
        "{err}"
    );
    let m = member(&lb, &pool, &name).await;
    assert_eq!(
        (m.admin, m.address.as_str()),
        (MemberState::Maint, "10.77.0.246:80")
    );

    lb.member_set(&pool, &name, MemberState::Ready)
        .await
        .unwrap();
    assert_eq!(member(&lb, &pool, &name).await.admin, MemberState::Ready);
    lb.member_set(&pool, &name, MemberState::Drain)
        .await
        .unwrap();
    assert_eq!(member(&lb, &pool, &name).await.admin, MemberState::Drain);
    lb.member_set(&pool, &name, MemberState::Maint)
        .await
        .unwrap();
    assert_eq!(member(&lb, &pool, &name).await.admin, MemberState::Maint);

    assert!(lb.member_remove(&pool, &name).await.unwrap());
    assert!(
        !lb.member_remove(&pool, &name).await.unwrap(),
        "already gone"
    );
    assert_eq!(
        lb.members(&pool).await.unwrap().len(),
        before,
        "HAProxy is as before"
    );

    let hostile = format!("{name}\nshutdown sessions server {pool}/x");
    let err = lb
        .member_add(&pool, &hostile, "10.77.0.246:80".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, LbError::BadName { .. }), "{err:?}");
    let err = lb
        .member_set("no_such_pool", "x", MemberState::Ready)
        .await
        .unwrap_err();
    assert!(matches!(err, LbError::Refused { .. }), "{err:?}");
}
