use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

fn spec(scopes: &[Scope]) -> TokenSpec {
    TokenSpec {
        name: "t".into(),
        scopes: Scopes::of(scopes),
        prefix: None,
        ttl_ms: None,
    }
}

fn table_with(records: &[TokenRecord]) -> TokenTable {
    let mut t = TokenTable::default();
    for r in records {
        t.insert(r.clone()).unwrap();
    }
    t
}

#[test]
fn a_minted_token_authenticates_with_its_scopes_and_nothing_else_does() {
    let mut rng = StdRng::seed_from_u64(1);
    let (token, record) = mint(&spec(&[Scope::Read]), 1_000, &mut rng).unwrap();
    assert!(token.starts_with("rkv_"));
    assert_ne!(record.hash, [0; 32]);
    assert!(!format!("{record:?}").contains(token.rsplit('_').next().unwrap()));
    let table = table_with(std::slice::from_ref(&record));
    let who = table.authenticate(&token, None, 2_000).unwrap();
    assert_eq!(who.token, Some(record.id));
    who.require(Scope::Read, "get").unwrap();
    let denied = who.require(Scope::Write, "put").unwrap_err();
    assert_eq!(denied.code(), crate::error::Code::PermissionDenied);

    // The right id with another secret, a malformed string, an unknown id.
    let forged = format!("rkv_{}_AAAA", format_id(record.id));
    for bad in [
        forged.as_str(),
        "Bearer x",
        "",
        "rkv__",
        "rkv_0000000000000001_x",
    ] {
        let e = table.authenticate(bad, None, 2_000).unwrap_err();
        assert_eq!(e.code(), crate::error::Code::Unauthenticated, "{bad}");
    }
}

#[test]
fn revoked_and_expired_tokens_are_refused_and_the_root_token_has_every_scope() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut s = spec(&[Scope::Write]);
    s.ttl_ms = Some(10_000);
    let (expiring, record) = mint(&s, 1_000, &mut rng).unwrap();
    let (revoked, other) = mint(&spec(&[Scope::Admin]), 1_000, &mut rng).unwrap();
    let mut table = table_with(&[record, other.clone()]);
    assert!(table.authenticate(&expiring, None, 10_999).is_ok());
    let e = table.authenticate(&expiring, None, 11_000).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(table.revoke(other.id).unwrap());
    assert!(!table.revoke(other.id).unwrap(), "revoked once");
    let e = table.authenticate(&revoked, None, 2_000).unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    assert_eq!(
        table.revoke(7).unwrap_err().code(),
        crate::error::Code::NotFound
    );

    let root = "a-root-token-of-at-least-32-characters";
    let who = table.authenticate(root, Some(&hash(root)), 0).unwrap();
    assert_eq!(who, Principal::root());
    assert!(table.authenticate(root, None, 0).is_err());
}

#[test]
fn a_prefix_token_allows_only_its_keys() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut s = spec(&[Scope::Read, Scope::Write]);
    s.prefix = Some(b"tenant-a/".to_vec());
    let (token, record) = mint(&s, 0, &mut rng).unwrap();
    let who = table_with(&[record]).authenticate(&token, None, 0).unwrap();
    who.allow_key(b"tenant-a/k").unwrap();
    let e = who.allow_key(b"tenant-b/k").unwrap_err();
    assert_eq!(e.code(), crate::error::Code::PermissionDenied);
    assert!(Principal::root().allow_key(b"anything").is_ok());
}

#[test]
fn bad_token_specs_are_refused() {
    let mut rng = StdRng::seed_from_u64(4);
    assert!(mint(&spec(&[]), 0, &mut rng).is_err());
    let mut s = spec(&[Scope::Read]);
    s.prefix = Some(vec![]);
    assert!(mint(&s, 0, &mut rng).is_err());
    s.prefix = None;
    s.name = "x".repeat(MAX_NAME_BYTES + 1);
    assert!(mint(&s, 0, &mut rng).is_err());
    let mut admin = spec(&[Scope::Read, Scope::Admin]);
    admin.prefix = Some(b"p/".to_vec());
    let e = mint(&admin, 0, &mut rng).unwrap_err();
    assert!(e.to_string().contains("admin"), "{e}");
}

#[test]
fn a_taken_id_is_refused_and_a_same_id_merge_converges() {
    let mut rng = StdRng::seed_from_u64(6);
    let (_, a) = mint(&spec(&[Scope::Read]), 0, &mut rng).unwrap();
    let mut table = table_with(std::slice::from_ref(&a));
    assert!(table.insert(a.clone()).is_err());
    // Another token that drew the same id: both sides keep the same one.
    let mut b = a.clone();
    b.hash = [0; 32];
    let mut other = TokenTable::default();
    other.merge_one(b.clone());
    assert!(table.merge(&other), "taking the other record is a change");
    assert_eq!(table.get(a.id), Some(&b));
    assert!(!other.merge(&table_with(&[a])));
    assert_eq!(other, table);
}

#[test]
fn the_encoding_round_trips_and_garbage_is_an_error() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut s = spec(&[Scope::Read, Scope::Write]);
    s.prefix = Some(b"p/".to_vec());
    s.ttl_ms = Some(5);
    let (_, a) = mint(&s, 9, &mut rng).unwrap();
    let (_, mut b) = mint(&spec(&[Scope::Write]), 9, &mut rng).unwrap();
    b.revoked = true;
    let table = table_with(&[a, b]);
    let bytes = table.encode();
    assert_eq!(TokenTable::decode(&bytes, Error::Corrupt).unwrap(), table);
    for cut in 0..bytes.len() {
        assert!(TokenTable::decode(&bytes[..cut], Error::Corrupt).is_err());
    }
    let mut wrong = bytes.clone();
    wrong[0] = 9;
    assert!(TokenTable::decode(&wrong, Error::Corrupt).is_err());
}

#[test]
fn base64url_matches_the_standard_alphabet() {
    assert_eq!(base64_engine::encode_base64url(b""), "");
    assert_eq!(base64_engine::encode_base64url(b"f"), "Zg");
    assert_eq!(base64_engine::encode_base64url(b"fo"), "Zm8");
    assert_eq!(base64_engine::encode_base64url(b"foo"), "Zm9v");
    assert_eq!(base64_engine::encode_base64url(&[0xfb, 0xff]), "-_8");
}

fn arb_record() -> impl Strategy<Value = TokenRecord> {
    (0u64..6, any::<bool>(), any::<u8>()).prop_map(|(id, revoked, h)| TokenRecord {
        id,
        name: format!("t{id}"),
        scopes: Scopes::of(&[Scope::Read]),
        prefix: None,
        created_ms: 0,
        expires_ms: None,
        // Few distinct hashes per id, so same-id collisions happen.
        hash: [h % 3; 32],
        revoked,
    })
}

fn arb_table() -> impl Strategy<Value = TokenTable> {
    proptest::collection::vec(arb_record(), 0..8).prop_map(|records| {
        let mut t = TokenTable::default();
        for r in records {
            t.merge_one(r);
        }
        t
    })
}

fn merged(a: &TokenTable, b: &TokenTable) -> TokenTable {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        a in arb_table(), b in arb_table(), c in arb_table()
    ) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
    }

    #[test]
    fn a_revocation_survives_every_merge(a in arb_table(), b in arb_table()) {
        let m = merged(&a, &b);
        for r in a.records().chain(b.records()).filter(|r| r.revoked) {
            prop_assert!(m.get(r.id).unwrap().revoked);
        }
    }
}
