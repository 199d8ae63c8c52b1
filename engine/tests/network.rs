//! The network's contract: shapes, the folded inference forms equal to the training
//! form, checkpoints that round-trip bit for bit and refuse what they cannot load.

use candle_core::{DType, Device, Tensor};
use ember_engine::bench::sample_positions;
use ember_engine::encoding::{encode_position, PLANES_LEN, POLICY_SIZE};
use ember_engine::mcts::NetEvaluator;
use ember_engine::net::{
    cpu::CpuNet, moves_left_plies, selected_policy_index, DeviceNet, NetConfig, Network, Precision,
};

fn planes(n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * PLANES_LEN];
    for (p, c) in sample_positions(n, 5)
        .iter()
        .zip(out.chunks_exact_mut(PLANES_LEN))
    {
        encode_position(p, c);
    }
    out
}

/// Gives batch norm non-trivial statistics so folding has something to fold.
fn randomise_batch_norm(net: &Network, seed: u64) {
    net.randomise_statistics(seed).unwrap();
}

/// Gives every squeeze-and-excitation tensor values of a few tenths either way (a fresh
/// unit's gates are all about one half), so the unit's every path changes the output.
fn randomise_squeeze_excitation(net: &Network, seed: u64) {
    randomise_tensors(net, ".se.", seed);
}

/// Gives the moves-left head's weights and biases values of a few tenths either way (a
/// fresh head's output is near 0, where the clamp at 0 plies would hide half of it).
fn randomise_moves_left(net: &Network, seed: u64) {
    randomise_tensors(net, "moves_left.", seed);
}

/// Values of a few tenths either way for every trained tensor whose name holds `part`.
fn randomise_tensors(net: &Network, part: &str, seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (name, var, _) in net.named_tensors() {
        if !name.contains(part) || name.contains(".bn.") {
            continue;
        }
        let n = var.as_tensor().elem_count();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.2
            })
            .collect();
        var.set(&Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The training form's plies left (its raw output read as inference reads it).
fn training_form_moves_left(net: &Network, p: &[f32], n: usize) -> Vec<f32> {
    let x = Tensor::from_slice(p, (n, PLANES_LEN), &Device::Cpu).unwrap();
    let out = net.forward(&x, false, DType::F32).unwrap();
    let raw: Vec<f32> = out
        .moves_left
        .expect("the moves-left head")
        .to_vec1()
        .unwrap();
    raw.into_iter().map(moves_left_plies).collect()
}

fn training_form_outputs(net: &Network, p: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    let x = Tensor::from_slice(p, (n, PLANES_LEN), &Device::Cpu).unwrap();
    let out = net.forward(&x, false, DType::F32).unwrap();
    (
        out.policy.flatten_all().unwrap().to_vec1().unwrap(),
        out.wdl.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

#[test]
fn folded_forms_match_the_training_form() {
    for config in [
        NetConfig::plain(64, 3),
        NetConfig::plain(128, 5),
        NetConfig {
            se_channels: 16,
            ..NetConfig::plain(64, 3)
        },
        NetConfig {
            moves_left_head: true,
            ..NetConfig::plain(32, 2)
        },
    ] {
        let net = Network::new(config, &Device::Cpu, 3).unwrap();
        randomise_batch_norm(&net, 4);
        randomise_squeeze_excitation(&net, 5);
        randomise_moves_left(&net, 6);
        let n = 70; // more than one CPU chunk of 64 boards
        let p = planes(n);
        let (policy, wdl) = training_form_outputs(&net, &p, n);
        assert_eq!(policy.len(), n * POLICY_SIZE);
        let folded = net.folded().unwrap();
        let mut cpu = CpuNet::new(folded.clone());
        let (mut cp, mut cw) = (vec![0.0; n * POLICY_SIZE], vec![0.0; n * 3]);
        cpu.forward(&p, n, &mut cp, &mut cw);
        assert!(
            max_rel_err(&policy, &cp) < 1e-4,
            "{config} cpu policy {}",
            max_rel_err(&policy, &cp)
        );
        assert!(
            max_rel_err(&wdl, &cw) < 1e-4,
            "{config} cpu wdl {}",
            max_rel_err(&wdl, &cw)
        );
        let dev = DeviceNet::new(&folded, &Device::Cpu, DType::F32).unwrap();
        let (dp, dw) = dev.forward(&p, n, &Device::Cpu).unwrap();
        assert!(
            max_rel_err(&policy, &dp) < 1e-4,
            "{config} device policy {}",
            max_rel_err(&policy, &dp)
        );
        assert!(max_rel_err(&wdl, &dw) < 1e-4);
        // The search's path: byte planes, and only the named logits come back.
        let bytes: Vec<u8> = p.iter().map(|&x| x as u8).collect();
        let picks: Vec<(usize, usize)> = (0..n).map(|i| (i, (i * 97 + 13) % POLICY_SIZE)).collect();
        let select: Vec<u32> = picks
            .iter()
            .map(|&(i, k)| selected_policy_index(i, k) as u32)
            .collect();
        let (sp, sw, sm) = dev
            .forward_selected(&bytes, n, &select, &Device::Cpu)
            .unwrap();
        let mut cm = vec![-1.0; n];
        cpu.forward_with_moves_left(&p, n, &mut cp, &mut cw, Some(&mut cm));
        if config.moves_left_head {
            // The plies left of the training form, the CPU's folded form and the device's.
            let want = training_form_moves_left(&net, &p, n);
            let positive = want.iter().filter(|&&m| m > 0.0).count();
            assert!(
                positive > n / 4 && positive < n,
                "{positive} of {n} above 0 plies"
            );
            assert!(want.iter().all(|&m| m >= 0.0));
            assert!(
                max_rel_err(&want, &cm) < 1e-4,
                "{}",
                max_rel_err(&want, &cm)
            );
            assert!(
                max_rel_err(&want, &sm) < 1e-4,
                "{}",
                max_rel_err(&want, &sm)
            );
            assert!(cpu.has_moves_left() && dev.has_moves_left());
        } else {
            assert!(sm.is_empty());
            assert!(cm.iter().all(|&m| m == -1.0), "no head writes no plies");
        }
        assert_eq!(sp.len(), n);
        for (&(i, k), got) in picks.iter().zip(&sp) {
            let want = dp[i * POLICY_SIZE + k];
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{config} logit {i}/{k}: {got} vs {want}"
            );
        }
        assert_eq!(sw, dw);
    }
}

#[test]
fn single_thread_and_multi_thread_cpu_forward_agree() {
    let net = Network::new(NetConfig::plain(32, 2), &Device::Cpu, 9).unwrap();
    let p = planes(9);
    let mut a = CpuNet::new(net.folded().unwrap());
    let mut b = CpuNet::new(net.folded().unwrap());
    a.set_threads(1);
    b.set_threads(2);
    let (mut pa, mut wa, mut pb, mut wb) = (
        vec![0.0; 9 * POLICY_SIZE],
        vec![0.0; 27],
        vec![0.0; 9 * POLICY_SIZE],
        vec![0.0; 27],
    );
    a.forward(&p, 9, &mut pa, &mut wa);
    b.forward(&p, 9, &mut pb, &mut wb);
    assert!(max_rel_err(&pa, &pb) < 1e-5);
    assert!(max_rel_err(&wa, &wb) < 1e-5);
}

#[test]
fn f16_compute_stays_close_to_f32() {
    let net = Network::new(NetConfig::plain(16, 1), &Device::Cpu, 2).unwrap();
    let p = planes(4);
    let x = Tensor::from_slice(&p, (4, PLANES_LEN), &Device::Cpu).unwrap();
    let a = net
        .forward(&x, false, DType::F32)
        .unwrap()
        .policy
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = net
        .forward(&x, false, DType::F16)
        .unwrap()
        .policy
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_rel_err(&a, &b) < 2e-2, "{}", max_rel_err(&a, &b));
}

#[test]
fn training_mode_updates_batch_norm_running_statistics() {
    let net = Network::new(NetConfig::plain(8, 1), &Device::Cpu, 2).unwrap();
    let before = net
        .input
        .bn
        .running_mean
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    let x = Tensor::from_slice(&planes(6), (6, PLANES_LEN), &Device::Cpu).unwrap();
    net.forward(&x, true, DType::F32).unwrap();
    let after = net
        .input
        .bn
        .running_mean
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(before, after);
}

#[test]
fn checkpoint_round_trip_gives_bit_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let mut net = Network::new(NetConfig::plain(16, 2), &Device::Cpu, 7).unwrap();
    randomise_batch_norm(&net, 8);
    net.iteration = 12;
    net.save(&path).unwrap();
    let loaded = Network::load(&path, Some(NetConfig::plain(16, 2)), &Device::Cpu).unwrap();
    assert_eq!(loaded.iteration, 12);
    let p = planes(5);
    assert_eq!(
        training_form_outputs(&net, &p, 5),
        training_form_outputs(&loaded, &p, 5)
    );
    let mut a = NetEvaluator::new(&net, Precision::F32).unwrap();
    let mut b = NetEvaluator::new(&loaded, Precision::F32).unwrap();
    assert_eq!(
        a.forward_planes(&p, 5).unwrap(),
        b.forward_planes(&p, 5).unwrap()
    );
}

#[test]
fn checkpoint_of_another_architecture_is_refused_naming_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    Network::new(NetConfig::plain(16, 2), &Device::Cpu, 7)
        .unwrap()
        .save(&path)
        .unwrap();
    let err = Network::load(&path, Some(NetConfig::plain(32, 3)), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("filters is 16 (expected 32)"), "{err}");
    assert!(err.contains("blocks is 2 (expected 3)"), "{err}");
}

#[test]
fn truncated_or_corrupt_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = Network::new(NetConfig::plain(8, 1), &Device::Cpu, 7).unwrap();
    let bytes = net.to_bytes().unwrap();
    for cut in [5, bytes.len() / 2, bytes.len() - 3] {
        let path = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = Network::load(&path, None, &Device::Cpu)
            .err()
            .expect("truncated file refused")
            .to_string();
        assert!(err.contains("corrupt or truncated"), "{err}");
    }
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"not a checkpoint at all").unwrap();
    assert!(Network::load(&path, None, &Device::Cpu).is_err());
    let err = Network::load(&dir.path().join("missing.safetensors"), None, &Device::Cpu)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("missing.safetensors"));
}

#[test]
fn checkpoint_with_foreign_metadata_is_refused_naming_the_field() {
    let t = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let mut meta = ember_engine::net::checkpoint::metadata(NetConfig::default(), 0);
    meta.insert("policy_size".into(), "4096".into());
    let bytes = ember_engine::net::checkpoint::serialize(&[("x".to_string(), t)], meta).unwrap();
    let err = Network::from_bytes(&bytes, None, &Device::Cpu, "old.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`policy_size` is 4096"), "{err}");
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best.safetensors");
    let net = Network::new(NetConfig::plain(8, 1), &Device::Cpu, 1).unwrap();
    net.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A write into a directory that cannot be created fails without touching `path`.
    let blocked = dir.path().join("file-not-dir");
    std::fs::write(&blocked, b"x").unwrap();
    assert!(ember_engine::files::write_atomic(&blocked.join("x.safetensors"), b"data").is_err());
    // Temporary files of other writers never replace the target until renamed.
    let stray = dir.path().join(".best.safetensors.999.tmp");
    std::fs::write(&stray, &before[..10]).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(Network::load(&path, None, &Device::Cpu).is_ok());
}

/// With every gate held open (sigmoid(40) is 1 in f32) and no shift, a block with a
/// squeeze-and-excitation unit is the plain block: the training form and the CPU's folded
/// form of such a network give the plain network's outputs.
#[test]
fn squeeze_excitation_with_open_gates_and_no_shift_is_the_plain_block() {
    let plain = Network::new(NetConfig::plain(32, 2), &Device::Cpu, 3).unwrap();
    randomise_batch_norm(&plain, 4);
    let se_config = NetConfig {
        se_channels: 8,
        ..NetConfig::plain(32, 2)
    };
    let se = Network::new(se_config, &Device::Cpu, 9).unwrap();
    let theirs: std::collections::HashMap<String, Tensor> = plain
        .named_tensors()
        .into_iter()
        .map(|(n, v, _)| (n, v.as_tensor().clone()))
        .collect();
    randomise_squeeze_excitation(&se, 6);
    for (name, var, _) in se.named_tensors() {
        if let Some(t) = theirs.get(&name) {
            var.set(t).unwrap();
        } else if name.ends_with("se.fc2.weight") {
            var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
        } else if name.ends_with("se.fc2.bias") {
            let mut open = vec![40f32; 32];
            open.extend([0f32; 32]);
            var.set(&Tensor::from_vec(open, 64, &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let n = 9;
    let p = planes(n);
    let (pp, pw) = training_form_outputs(&plain, &p, n);
    let (sp, sw) = training_form_outputs(&se, &p, n);
    assert!(max_rel_err(&pp, &sp) < 1e-5, "{}", max_rel_err(&pp, &sp));
    assert!(max_rel_err(&pw, &sw) < 1e-5);
    let mut cpu = CpuNet::new(se.folded().unwrap());
    let (mut cp, mut cw) = (vec![0.0; n * POLICY_SIZE], vec![0.0; n * 3]);
    cpu.forward(&p, n, &mut cp, &mut cw);
    assert!(max_rel_err(&pp, &cp) < 1e-4, "{}", max_rel_err(&pp, &cp));
    assert!(max_rel_err(&pw, &cw) < 1e-4);
    // Shut the gates instead: each block passes its input through, and the outputs change.
    for (name, var, _) in se.named_tensors() {
        if name.ends_with("se.fc2.bias") {
            var.set(&Tensor::from_vec(vec![-40f32; 64], 64, &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let (shut, _) = training_form_outputs(&se, &p, n);
    assert!(max_rel_err(&pp, &shut) > 1e-3);
}

#[test]
fn squeeze_excitation_checkpoints_round_trip_and_declare_their_units() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("se.safetensors");
    let config = NetConfig {
        se_channels: 4,
        ..NetConfig::plain(16, 2)
    };
    let net = Network::new(config, &Device::Cpu, 7).unwrap();
    randomise_batch_norm(&net, 8);
    randomise_squeeze_excitation(&net, 9);
    net.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let meta = ember_engine::net::checkpoint::read_metadata(&bytes, "se").unwrap();
    assert_eq!(meta.get("se_channels").map(String::as_str), Some("4"));
    let loaded = Network::load(&path, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, config);
    let p = planes(5);
    assert_eq!(
        training_form_outputs(&net, &p, 5),
        training_form_outputs(&loaded, &p, 5)
    );
    let err = Network::load(&path, Some(NetConfig::plain(16, 2)), &Device::Cpu)
        .err()
        .expect("a plain network was asked for");
    assert!(format!("{err:#}").contains("se_channels is 4"), "{err:#}");
    // A plain network's file names no units, as before they existed.
    let plain = dir.path().join("plain.safetensors");
    Network::new(NetConfig::plain(16, 2), &Device::Cpu, 7)
        .unwrap()
        .save(&plain)
        .unwrap();
    let meta =
        ember_engine::net::checkpoint::read_metadata(&std::fs::read(&plain).unwrap(), "plain")
            .unwrap();
    assert!(!meta.contains_key("se_channels"));
    // The built-in network, written before the field existed, loads as plain.
    let embedded = Network::from_bytes(
        ember_engine::net::EMBEDDED_NETWORK,
        None,
        &Device::Cpu,
        "embedded",
    )
    .unwrap();
    assert_eq!(embedded.config.se_channels, 0);
}

/// The reply head is trained, saved and loaded with the network, and the inference forms,
/// which never run it, give the training form's policy and value.
#[test]
fn the_reply_head_round_trips_and_leaves_inference_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reply.safetensors");
    let config = NetConfig {
        reply_head: true,
        ..NetConfig::plain(16, 2)
    };
    let net = Network::new(config, &Device::Cpu, 7).unwrap();
    randomise_batch_norm(&net, 8);
    assert!(net.tensor_names().any(|n| n == "policy.reply.weight"));
    net.save(&path).unwrap();
    let meta =
        ember_engine::net::checkpoint::read_metadata(&std::fs::read(&path).unwrap(), "r").unwrap();
    assert_eq!(meta.get("reply_head").map(String::as_str), Some("1"));
    let loaded = Network::load(&path, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, config);
    let n = 5;
    let p = planes(n);
    let x = Tensor::from_slice(&p, (n, PLANES_LEN), &Device::Cpu).unwrap();
    let out = loaded.forward(&x, false, DType::F32).unwrap();
    let reply = out.reply.expect("the reply head's logits");
    assert_eq!(reply.dims(), &[n, POLICY_SIZE]);
    let (policy, wdl) = training_form_outputs(&loaded, &p, n);
    let mut cpu = CpuNet::new(loaded.folded().unwrap());
    let (mut cp, mut cw) = (vec![0.0; n * POLICY_SIZE], vec![0.0; n * 3]);
    cpu.forward(&p, n, &mut cp, &mut cw);
    assert!(max_rel_err(&policy, &cp) < 1e-4);
    assert!(max_rel_err(&wdl, &cw) < 1e-4);
    let err = Network::load(&path, Some(NetConfig::plain(16, 2)), &Device::Cpu)
        .err()
        .expect("a network without the head was asked for");
    assert!(format!("{err:#}").contains("reply_head is true"), "{err:#}");
}

/// The moves-left head is saved and loaded with the network and its checkpoint says so;
/// a file without the field (every file before the head existed) loads without it, and a
/// field that is neither 0 nor 1 is refused in one line.
#[test]
fn the_moves_left_head_round_trips_and_older_checkpoints_load_without_it() {
    use ember_engine::net::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlh.safetensors");
    let config = NetConfig {
        moves_left_head: true,
        ..NetConfig::plain(16, 2)
    };
    assert_eq!(config.to_string(), "16x2-mlh");
    let net = Network::new(config, &Device::Cpu, 7).unwrap();
    randomise_batch_norm(&net, 8);
    randomise_moves_left(&net, 9);
    assert!(net.tensor_names().any(|n| n == "moves_left.fc2.weight"));
    net.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let meta = checkpoint::read_metadata(&bytes, "mlh").unwrap();
    assert_eq!(meta.get("moves_left_head").map(String::as_str), Some("1"));
    let loaded = Network::load(&path, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, config);
    let p = planes(6);
    assert_eq!(
        training_form_moves_left(&net, &p, 6),
        training_form_moves_left(&loaded, &p, 6)
    );
    let err = Network::load(&path, Some(NetConfig::plain(16, 2)), &Device::Cpu)
        .err()
        .expect("a network without the head was asked for");
    assert!(
        format!("{err:#}").contains("moves_left_head is true"),
        "{err:#}"
    );

    // Without the head: no field in the file, and none in what loads.
    let plain = Network::new(NetConfig::plain(16, 2), &Device::Cpu, 7).unwrap();
    let plain_bytes = plain.to_bytes().unwrap();
    let meta = checkpoint::read_metadata(&plain_bytes, "plain").unwrap();
    assert!(!meta.contains_key("moves_left_head"));
    let x = Tensor::from_slice(&p, (6, PLANES_LEN), &Device::Cpu).unwrap();
    assert!(plain
        .forward(&x, false, DType::F32)
        .unwrap()
        .moves_left
        .is_none());
    let embedded = Network::from_bytes(
        ember_engine::net::EMBEDDED_NETWORK,
        None,
        &Device::Cpu,
        "embedded",
    )
    .unwrap();
    assert!(!embedded.config.moves_left_head);

    // A hostile value of the field.
    let tensors: Vec<(String, Tensor)> = net
        .named_tensors()
        .into_iter()
        .map(|(n, v, _)| (n, v.as_tensor().clone()))
        .collect();
    let mut meta = checkpoint::metadata(config, 0);
    meta.insert("moves_left_head".into(), "yes\nplease".into());
    let hostile = checkpoint::serialize(&tensors, meta).unwrap();
    let err = Network::from_bytes(&hostile, None, &Device::Cpu, "hostile")
        .err()
        .expect("a bad moves_left_head field")
        .to_string();
    assert!(
        err.contains("`moves_left_head`") && err.contains("expected 0 or 1"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
