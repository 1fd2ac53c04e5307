//! Rule 4: client tokens are untrusted input. A forged or tampered token is
//! refused by `TokenKey::verify` (so it never reaches routing); a genuine one
//! carries read-your-writes to an instance that has never seen the session;
//! an old one cannot lower what the session must see; and a signed token far
//! in the future makes a read wait at most its budget, or not at all when it
//! is absurd.

use std::sync::Arc;
use std::time::Duration;

use ryw_router::{
    Freshness, Lsn, MemoryStore, ReadOptions, RouterConfig, Strategy, TokenError, TokenKey,
};

use crate::support::{Ctx, StoreKind, ms, read, router_for, session, with, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_and_far_future_tokens_never_wait_past_the_budget() {
    let ctx = Ctx::start(&[ms(400)], RouterConfig::default(), StoreKind::Memory).await;
    let (router, nodes) = (&ctx.router, &ctx.nodes);
    // A fixed key, so that every run signs the same MACs: the verdicts
    // below cannot depend on what a random key's tag happens to end with.
    let key = TokenKey::from_secret("the tokens test's key, fixed so runs repeat").unwrap();

    let s = session("token-holder");
    let first = write(router, &s, 1).await;
    let old_token = key.sign(first);
    let second = write(router, &s, 2).await;
    let token = key.sign(second);
    assert_eq!(key.verify(&token), Ok(second.into()));

    // Forged: signed by another deployment's key.
    let forged = TokenKey::from_secret("another deployment's key, also fixed")
        .unwrap()
        .sign(second);
    assert_eq!(key.verify(&forged), Err(TokenError::BadSignature));
    // Tampered: position raised, signature kept; signature altered.
    let (_, mac) = token.rsplit_once('.').unwrap();
    let raised = format!("v2.{:08x}{:016x}.{mac}", 1, second.as_u64() + 1);
    assert_eq!(key.verify(&raised), Err(TokenError::BadSignature));
    // Bend the MAC's first character, not its last: the last base64url
    // character of a 32-byte tag carries two spare bits, and changing it can
    // make the text non-canonical (refused as `Malformed` before the
    // signature is checked). Any other position stays canonical, so this is
    // a well-formed token with a wrong signature, whatever the tag is.
    let mac_at = token.rfind('.').unwrap() + 1;
    let mut bent = token.clone().into_bytes();
    bent[mac_at] = if bent[mac_at] == b'A' { b'B' } else { b'A' };
    let bent = String::from_utf8(bent).unwrap();
    assert_eq!(key.verify(&bent), Err(TokenError::BadSignature));
    for junk in [
        "",
        "v1",
        "v1.zz.zz",
        "v2.0000000000000001.AAAA",
        &"v1.".repeat(200),
    ] {
        assert!(key.verify(junk).is_err(), "{junk:?} accepted");
    }

    // An old genuine token cannot lower the session's own (stored) token.
    let old = key.verify(&old_token).unwrap();
    let r = read(
        router,
        nodes,
        &s,
        Freshness::Fresh,
        with(Strategy::Causal),
        Some(old),
    )
    .await
    .expect("read");
    assert_eq!(r.v, 2, "an old token made the read stale");

    // A genuine token carries read-your-writes to an instance with an empty
    // store (another instance, another device).
    let other = router_for(
        &ctx.cluster,
        &["follower1"],
        RouterConfig::default(),
        Arc::new(MemoryStore::default()),
    )
    .await;
    let carried = key.verify(&token).unwrap();
    for strategy in [Strategy::Causal, Strategy::Hybrid, Strategy::PerReadCheck] {
        let r = read(
            &other,
            nodes,
            &s,
            Freshness::Fresh,
            with(strategy),
            Some(carried),
        )
        .await
        .expect("read");
        assert_eq!(r.v, 2, "{strategy}: the token did not carry the write");
    }

    // Far-future tokens, genuinely signed: 512 MiB ahead (beyond any follower
    // for the whole test, but not absurd) and at the end of the WAL space.
    let budget = Duration::from_secs(1);
    let leader = router.cluster_view().leader_lsn().expect("leader position");
    let ahead = key
        .verify(&key.sign(leader.saturating_add(512 << 20)))
        .unwrap();
    let absurd = key.verify(&key.sign(Lsn::from_u64(u64::MAX))).unwrap();
    for strategy in [Strategy::Causal, Strategy::Hybrid, Strategy::PerReadCheck] {
        let opts = ReadOptions {
            strategy: Some(strategy),
            sticky_window: Some(Duration::ZERO),
            wait_budget: Some(budget),
            ..ReadOptions::default()
        };
        for (label, t) in [("ahead", ahead), ("absurd", absurd)] {
            let s = session(format!("far-{strategy}-{label}"));
            write(router, &s, 1).await;
            let r = read(router, nodes, &s, Freshness::Fresh, opts, Some(t))
                .await
                .expect("read");
            eprintln!("{strategy}, token {label}: {:?}", r.elapsed);
            assert_eq!(r.v, 1, "{strategy}, {label}: stale");
            assert!(
                r.elapsed < budget + ms(500),
                "{strategy}, {label}: waited {:?}, budget {budget:?}",
                r.elapsed
            );
            if label == "absurd" || strategy == Strategy::PerReadCheck {
                assert!(
                    r.elapsed < ms(500),
                    "{strategy}, {label}: waited {:?} for nothing",
                    r.elapsed
                );
            }
            // The absurd token was clamped, not handed back or stored.
            if label == "absurd" {
                let now = router.cluster_view().leader_lsn().unwrap();
                assert!(
                    r.decision.token.is_some_and(|t| t.lsn <= now),
                    "{strategy}: token after an absurd one: {:?}",
                    r.decision.token
                );
            }
        }
    }
}
