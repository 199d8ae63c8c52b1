//! Property tests of every parser that reads what a user, a file or a worker gives:
//! checkpoints, replay shards, opening books (EPD and PGN), FEN and moves, metrics.jsonl
//! and the distributed exchange's records. Each gets arbitrary bytes and valid inputs
//! with bytes overwritten or cut off, and must answer with a value or an error, never a
//! panic. A bounded number of cases runs in CI (`PROPTEST_CASES` raises it for a longer
//! session); the cargo-fuzz targets in `fuzz/` run the same entry points coverage-guided.

use candle_core::Device;
use ember_engine::game::{parse_uci_move, Game};
use ember_engine::matches::{parse_openings, DEFAULT_BOOK};
use ember_engine::net::{NetConfig, Network};
use ember_engine::pipeline::exchange::Exchange;
use ember_engine::pipeline::metrics::load_and_trim;
use ember_engine::replay::{parse_shard, ShardWriter};
use ember_engine::selfplay::Sample;
use proptest::prelude::*;
use shakmaty::Position;
use std::sync::OnceLock;

/// 512 cases a property unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 512;
    }
    c
}

fn checkpoint() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut net = Network::new(NetConfig::plain(4, 1), &Device::Cpu, 1).unwrap();
        net.iteration = 3;
        net.run = Some("fuzz".into());
        net.to_bytes().unwrap()
    })
}

fn shard() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.shard");
        let mut w = ShardWriter::create(&path).unwrap();
        let mut game = Game::new();
        for mv in ["e2e4", "e7e5", "g1f3"] {
            let pos = game.position().clone();
            w.append(&Sample {
                position: pos.clone(),
                visits: vec![(7, 0.75), (100, 0.25)],
                result: 0.5,
                root_q: -0.1,
                reply: Some(42),
                plies_left: Some(17),
            })
            .unwrap();
            game.play(parse_uci_move(&pos, mv).unwrap());
        }
        std::fs::read(w.finish().unwrap()).unwrap()
    })
}

const PGN: &str = "[Event \"a\"]\n[FEN \"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1\"]\n\n1. e4 e5 2. Nf3 {main} (2. f4) Nc6 *\n\n[Event \"b\"]\n\n1. d4 *\n";

/// `valid` with some bytes overwritten, then cut at some length.
fn mutated(valid: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(edits, cut, truncate)| {
            let mut b = valid.to_vec();
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            if truncate {
                b.truncate(cut.index(b.len() + 1));
            }
            b
        })
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn checkpoints_load_or_are_refused(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(checkpoint()),
    ]) {
        if let Ok(net) = Network::from_bytes(&bytes, None, &Device::Cpu, "fuzz") {
            // What loads is a usable network of a declared size.
            prop_assert!(net.config.filters >= 1 && net.config.blocks >= 1);
        }
    }

    #[test]
    fn shards_parse_into_their_good_records(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(shard()),
    ]) {
        let (samples, stats) = parse_shard(&bytes, "fuzz");
        prop_assert!(samples.len() <= 3);
        prop_assert!(samples.len() <= stats.records);
        for s in &samples {
            prop_assert!(s.visits.iter().all(|&(i, p)| (i as usize) < 4672 && p.is_finite()));
        }
    }

    #[test]
    fn opening_books_parse_or_are_refused(text in prop_oneof![
        "\\PC{0,200}",
        mutated(&DEFAULT_BOOK.as_bytes()[..600]).prop_map(|b| text_of(&b)),
        mutated(PGN.as_bytes()).prop_map(|b| text_of(&b)),
    ]) {
        if let Ok(openings) = parse_openings(&text, "fuzz") {
            for o in openings {
                prop_assert!(Game::from_fen(&o.fen).is_ok(), "{}", o.fen);
            }
        }
    }

    #[test]
    fn fens_and_moves_parse_or_are_refused(
        fen in prop_oneof![
            "\\PC{0,90}",
            mutated(b"r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4")
                .prop_map(|b| text_of(&b)),
        ],
        moves in prop::collection::vec("[a-h][1-8][a-h][1-8][qrbnk]?|\\PC{0,6}", 0..6),
    ) {
        if let Ok(mut game) = Game::from_fen(&fen) {
            for m in &moves {
                let pos = game.position().clone();
                match parse_uci_move(&pos, m) {
                    Ok(mv) => {
                        prop_assert!(pos.is_legal(mv));
                        game.play(mv);
                    }
                    Err(_) => break,
                }
                if game.outcome().is_some() {
                    break;
                }
            }
        }
    }

    #[test]
    fn metrics_files_load_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..600), complete in 0u64..5) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(kept) = load_and_trim(&path, complete) {
            prop_assert!(kept.len() as u64 <= complete);
        }
    }

    #[test]
    fn exchange_records_read_or_are_refused(
        published in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            mutated(br#"{"format":"ember-published","version":3,"network":"networks/net-000003.safetensors"}"#),
        ],
        meta in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("shards")).unwrap();
        std::fs::write(dir.path().join("published.json"), &published).unwrap();
        std::fs::write(dir.path().join("shards/w-000001.json"), &meta).unwrap();
        let x = Exchange::new(dir.path());
        if let Ok(Some(p)) = x.published() {
            prop_assert!(p.network.starts_with("networks/") && !p.network.contains(".."));
            prop_assert!(x.read_network(&p).is_err(), "no network file was written");
        }
        for name in x.complete_shards().unwrap() {
            let _ = x.read_meta(&name);
        }
        let _ = x.config::<serde_json::Value>();
    }
}
