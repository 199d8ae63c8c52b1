//! A FEN and UCI moves (the `position` command's parts), from arbitrary text.
#![no_main]
use ember_engine::game::{parse_uci_move, Game};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (fen, moves) = text.split_once(" moves ").unwrap_or((text, ""));
    let Ok(mut game) = Game::from_fen(fen) else {
        return;
    };
    for m in moves.split_whitespace() {
        let pos = game.position().clone();
        match parse_uci_move(&pos, m) {
            Ok(mv) => game.play(mv),
            Err(_) => break,
        }
        if game.outcome().is_some() {
            break;
        }
    }
});
