//! Model test: both engines behave like a sorted map per column family.

use super::rocks::reopen;
use super::*;

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<BatchOp>),
    Get(Cf, Vec<u8>),
    MultiGet(Cf, Vec<Vec<u8>>),
    Scan(Cf, Vec<u8>, Option<Vec<u8>>, usize),
    Flush,
}

/// Keys from a tiny alphabet so operations collide, prefixes and the empty
/// key included.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff)], 0..3)
}

fn cf() -> impl Strategy<Value = Cf> {
    prop::sample::select(Cf::ALL.to_vec())
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        3 => (cf(), key(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(cf, key, value)| BatchOp::Put { cf, key, value }),
        1 => (cf(), key()).prop_map(|(cf, key)| BatchOp::Delete { cf, key }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(batch_op(), 0..5).prop_map(Op::Write),
        2 => (cf(), key()).prop_map(|(cf, key)| Op::Get(cf, key)),
        1 => (cf(), prop::collection::vec(key(), 0..4)).prop_map(|(cf, keys)| Op::MultiGet(cf, keys)),
        2 => (cf(), key(), prop::option::of(key()), 0usize..6)
            .prop_map(|(cf, start, end, limit)| Op::Scan(cf, start, end, limit)),
        1 => Just(Op::Flush),
    ]
}

type Model = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

fn model_scan(
    model: &Model,
    cf: Cf,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    model[cf.index()]
        .iter()
        .filter(|(k, _)| k.as_slice() >= start && end.is_none_or(|end| k.as_slice() < end))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Runs `ops` against `engine` and the model, checking every read.
fn check_against_model(engine: &dyn Engine, ops: &[Op]) -> Model {
    let mut model: Model = Default::default();
    for op in ops {
        match op {
            Op::Write(batch_ops) => {
                let mut batch = WriteBatch::new();
                for batch_op in batch_ops {
                    match batch_op.clone() {
                        BatchOp::Put { cf, key, value } => {
                            model[cf.index()].insert(key.clone(), value.clone());
                            batch.put(cf, key, value);
                        }
                        BatchOp::Delete { cf, key } => {
                            model[cf.index()].remove(&key);
                            batch.delete(cf, key);
                        }
                    }
                }
                engine.write(batch).unwrap();
            }
            Op::Get(cf, key) => {
                assert_eq!(
                    engine.get(*cf, key).unwrap(),
                    model[cf.index()].get(key).cloned()
                );
            }
            Op::MultiGet(cf, keys) => {
                let expected: Vec<_> = keys
                    .iter()
                    .map(|k| model[cf.index()].get(k).cloned())
                    .collect();
                assert_eq!(engine.multi_get(*cf, keys).unwrap(), expected);
            }
            Op::Scan(cf, start, end, limit) => {
                assert_eq!(
                    engine.scan(*cf, start, end.as_deref(), *limit).unwrap(),
                    model_scan(&model, *cf, start, end.as_deref(), *limit)
                );
            }
            Op::Flush => engine.flush().unwrap(),
        }
    }
    assert_contents(engine, &model);
    model
}

fn assert_contents(engine: &dyn Engine, model: &Model) {
    for cf in Cf::ALL {
        assert_eq!(
            engine.scan(cf, b"", None, usize::MAX).unwrap(),
            model_scan(model, cf, b"", None, usize::MAX),
            "{cf:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn engines_match_a_sorted_map(ops in prop::collection::vec(op(), 0..40)) {
        check_against_model(&MemoryEngine::new(), &ops);

        let dir = TempDir::new().unwrap();
        let model = {
            let engine = reopen(dir.path(), SyncMode::Never);
            check_against_model(&engine, &ops)
        };
        // And the same state after a restart.
        assert_contents(&reopen(dir.path(), SyncMode::Never), &model);
    }
}
