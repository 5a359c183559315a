//! The fused CUDA kernels (crate::kernels) against the libtorch path they replace, on a GPU. They need one, so
//! they are ignored on the CPU and run by scripts/kernels/run.sh on the GPU machine (one at a time: they switch the
//! kernels on and off for the whole process). The CPU side of the same algorithms is tested in src/ (the sort-free
//! sampler in generate::sampling, the kernels' compilation in kernels).

use std::path::Path;
use std::time::Instant;

use stasc::generate::sampling::uniform;
use stasc::generate::{generate_ids, GenerateOptions, GenerationRequest, PromptInput, Sampling, StopRules};
use stasc::kernels;
use stasc::model::{CausalLm, KvCache, LoadOptions, ModelConfig, Pass};
use tch::{Device, Kind, Tensor};

/// A small Qwen2 whose heads the attention kernel takes (head_dim 64, 2 query heads per K/V head).
fn small_model(dtype: &str) -> CausalLm {
    let config = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 1000,
        "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": false, "initializer_range": 0.5}"#;
    let config = ModelConfig::from_json_str(config, Path::new("small.json")).unwrap();
    let opts =
        LoadOptions { device: "cuda".parse().unwrap(), dtype: dtype.parse().unwrap(), max_model_len: Some(1024) };
    CausalLm::random(config, &opts, 3).unwrap()
}

fn sync() {
    tch::Cuda::synchronize(0);
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn sort_free_kernel_picks_the_sort_paths_tokens_on_cuda() {
    // bf16 logits under top-k/top-p take the windowed kernel, then again the radix kernels; f32 the radix kernels:
    // 300 rows take the one-block kernel, 64 and 1 the split kernels (each row over several blocks).
    let (rows, vocab) = (300i64, 151_936i64);
    let device = Device::Cuda(0);
    // Random logits on a grid (ties), scaled like a model's; -0.0 and 0.0 in every row.
    let base = (Tensor::randn([rows, vocab], (Kind::Float, device)) * 3.0 * 8.0).round() / 8.0;
    let _ = base.narrow(1, 0, 1).fill_(-0.0);
    let _ = base.narrow(1, 1, 1).fill_(0.0);
    let us: Vec<f32> = (0..rows as u64).map(|r| uniform(42, r)).collect();
    let us = Tensor::from_slice(&us).to_device(device);
    let (mut checked, mut kernel_s, mut sort_s) = (0, 0.0, 0.0);
    let paths = [(Kind::BFloat16, true), (Kind::BFloat16, false), (Kind::Float, false)];
    for ((kind, windowed), batch) in paths.into_iter().flat_map(|p| [(p, 300), (p, 64), (p, 1)]) {
        kernels::set_windowed_sampler(windowed);
        let logits = base.narrow(0, 0, batch).to_kind(kind);
        let us = us.narrow(0, 0, batch);
        let k = kernels::for_tensor(&logits).expect("kernels load on the GPU");
        for temperature in [0.05, 0.6, 1.0, 3.0] {
            for (top_k, top_p) in [
                (None, None),
                (Some(1), None),
                (Some(50), None),
                (None, Some(0.9)),
                (None, Some(0.999)),
                (Some(50), Some(0.9)),
            ] {
                let rule = Sampling::from_params(temperature, top_p, top_k).unwrap();
                sync();
                let t0 = Instant::now();
                let got = k.sample(&logits, &us, temperature, top_k, top_p).unwrap().unwrap();
                sync();
                let t1 = Instant::now();
                let want = rule.sample_sorted(&logits, &us).unwrap();
                sync();
                kernel_s += (t1 - t0).as_secs_f64();
                sort_s += t1.elapsed().as_secs_f64();
                let (got, want) = (Vec::<i64>::try_from(got).unwrap(), Vec::<i64>::try_from(want).unwrap());
                assert_eq!(got, want, "{kind:?} windowed {windowed} batch {batch} {rule:?}");
                checked += got.len();
            }
        }
    }
    // Rows where the windowed kernel hands selections to radix selection: a nucleus ending among magnitudes below
    // 2^-16 (the tiny bin), and values over ~90 binades at a huge temperature (below the window).
    kernels::set_windowed_sampler(true);
    let spread = (Tensor::rand([64, vocab], (Kind::Float, device)) * 90.0 - 16.0).exp2();
    let sign = Tensor::rand([64, vocab], (Kind::Float, device)).lt(0.5).to_kind(Kind::Float) * 2.0 - 1.0;
    let tiny = &base.narrow(0, 0, 64) * 1e-7;
    let _ = tiny.narrow(1, 2, 1).fill_(1.0);
    // And rows that do not start on 16-byte boundaries (the windowed kernel's loads are then 2 bytes wide).
    let unaligned = base.narrow(0, 0, 64).narrow(1, 1, vocab - 1);
    for (name, logits, temperature) in
        [("tiny", tiny, 1.0), ("wide", spread * sign, 1e30), ("unaligned", unaligned, 0.6)]
    {
        let logits = logits.to_kind(Kind::BFloat16);
        let us = us.narrow(0, 0, 64);
        let k = kernels::for_tensor(&logits).expect("kernels load on the GPU");
        for (top_k, top_p) in [(None, Some(0.999)), (Some(50), Some(0.9)), (Some(5000), None)] {
            let rule = Sampling::from_params(temperature, top_p, top_k).unwrap();
            let got = Vec::<i64>::try_from(k.sample(&logits, &us, temperature, top_k, top_p).unwrap().unwrap());
            let want = Vec::<i64>::try_from(rule.sample_sorted(&logits, &us).unwrap());
            assert_eq!(got.unwrap(), want.unwrap(), "{name} {rule:?}");
            checked += 64;
        }
    }
    println!(
        "SAMPLER kernel == sort path for {checked} rows x {vocab} logits; time kernel {:.2} ms, sort {:.2} ms (first \
         calls included)",
        kernel_s * 1e3,
        sort_s * 1e3
    );
}

/// Logits of every real position of rows of lengths `lens` prefilled after a `shared`-token prefix that each row
/// holds a copy of (Pass::Extend, right-padded to the longest row), [real positions, vocab] f32.
fn extend_logits(model: &CausalLm, lens: &[i64], shared: i64) -> Tensor {
    let device = model.device();
    let (rows, t) = (lens.len() as i64, *lens.iter().max().unwrap());
    let mut prefix = KvCache::new(model.config(), 1, shared, model.kind(), device).unwrap();
    let ids = Tensor::arange(shared, (Kind::Int64, device)).remainder(997).view([1, shared]);
    let positions = Tensor::arange(shared, (Kind::Int64, device)).view([1, shared]);
    let zero = Tensor::zeros([1], (Kind::Int64, device));
    let _ = model.forward(&ids, &positions, Pass::Prefill { cache: &mut prefix, rows: &zero }).unwrap();
    let mut cache = model.new_cache(rows, 512).unwrap();
    let all = Tensor::arange(rows, (Kind::Int64, device));
    cache.copy_prefix(&prefix, &all, shared).unwrap();
    let tokens: Vec<i64> = (0..rows * t).map(|i| ((i % t + shared) * 7 + i / t) % 997).collect();
    let ids = Tensor::from_slice(&tokens).to_device(device).view([rows, t]);
    let positions = Tensor::arange_start(shared, shared + t, (Kind::Int64, device)).expand([rows, t], false);
    let pass = Pass::Extend { cache: &mut cache, rows: &all, start: shared };
    let hidden = model.forward(&ids, &positions, pass).unwrap();
    let logits = model.logits(&hidden.view([rows * t, -1])).unwrap().to_kind(Kind::Float).view([rows, t, -1]);
    let real: Vec<Tensor> = lens.iter().enumerate().map(|(r, &l)| logits.get(r as i64).narrow(0, 0, l)).collect();
    Tensor::cat(&real, 0)
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn flash_attention_prefills_after_a_cached_prefix_like_the_masked_attention_on_cuda() {
    // Rows of 1 to 200 tokens after prefixes of 129 and 300 positions, right-padded; flash attention's causal mask
    // (aligned to the bottom right) against scaled-dot-product attention with the explicit extend mask.
    let model = small_model("bf16");
    for (shared, lens) in [(129, vec![1i64, 37, 200, 64]), (300, vec![150, 3, 90])] {
        stasc::model::set_extend_flash(true);
        let flash = extend_logits(&model, &lens, shared);
        stasc::model::set_extend_flash(false);
        let masked = extend_logits(&model, &lens, shared);
        stasc::model::set_extend_flash(true);
        let diff = (&flash - &masked).abs().max().double_value(&[]);
        let scale = masked.abs().max().double_value(&[]);
        let same = flash.argmax(-1, false).eq_tensor(&masked.argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float);
        println!(
            "EXTEND bf16, prefix {shared}, rows {lens:?}: flash vs masked attention max |diff| {diff:.3e} (logits up \
             to {scale:.2}), same argmax at {:.1}% of {} positions",
            same.double_value(&[]) * 100.0,
            flash.size()[0]
        );
        // As for the fused decode in bf16: two attention kernels' roundings carried through the layers.
        assert!(diff <= 0.1 * scale.max(1.0), "prefix {shared}: max |diff| {diff} (logits up to {scale})");
        // A mask aligned to the top left would hide each row's own tokens: nearly every argmax would move.
        assert!(same.double_value(&[]) >= 0.9, "prefix {shared}: argmax agreement {same:?}");
    }
}

/// Logits of `steps` teacher-forced decode steps after prefilling rows of different lengths (every row's first
/// tokens are the same). With `shared` > 0 the decode steps are also handed those first positions as a one-row
/// prefix cache, which the fused attention reads instead of the rows' copies.
fn decode_logits(model: &CausalLm, lens: &[i64], steps: i64, shared: i64) -> Tensor {
    let device = model.device();
    let rows = lens.len() as i64;
    let ids = |len: i64| Tensor::arange(len, (Kind::Int64, device)).remainder(997).view([1, len]);
    let positions = |len: i64| Tensor::arange(len, (Kind::Int64, device)).view([1, len]);
    let mut cache = model.new_cache(rows, 512).unwrap();
    for (r, &len) in lens.iter().enumerate() {
        let row = Tensor::from_slice(&[r as i64]).to_device(device);
        let _ = model.forward(&ids(len), &positions(len), Pass::Prefill { cache: &mut cache, rows: &row }).unwrap();
    }
    let prefix = (shared > 0).then(|| {
        let mut prefix = KvCache::new(model.config(), 1, shared, model.kind(), device).unwrap();
        let row = Tensor::zeros([1], (Kind::Int64, device));
        let pass = Pass::Prefill { cache: &mut prefix, rows: &row };
        let _ = model.forward(&ids(shared), &positions(shared), pass).unwrap();
        prefix
    });
    let mut all = Vec::new();
    for step in 0..steps {
        let positions: Vec<i64> = lens.iter().map(|&l| l + step).collect();
        let attend = positions.iter().max().unwrap() + 1;
        let tokens: Vec<i64> = positions.iter().map(|p| (p * 7 + 3) % 997).collect();
        let tokens = Tensor::from_slice(&tokens).to_device(device).view([rows, 1]);
        let positions = Tensor::from_slice(&positions).to_device(device).view([rows, 1]);
        let pass = Pass::Decode { cache: &mut cache, attend_len: attend, shared: prefix.as_ref() };
        let hidden = model.forward(&tokens, &positions, pass).unwrap();
        all.push(model.logits(&hidden.view([rows, -1])).unwrap().to_kind(Kind::Float));
    }
    Tensor::stack(&all, 0)
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn fused_decode_gives_the_logits_of_libtorch_ops_on_cuda() {
    // Rows of different lengths crossing the attention kernel's 128-position chunks; a few rows get short chunks,
    // 80 rows the longest. The last cases attend to a shared prefix of 128 or 129 positions once for all rows.
    let many: Vec<i64> = (0..80).map(|r| 5 + 6 * r).collect();
    let prefixed: Vec<i64> = (0..40).map(|r| 130 + 7 * r).collect();
    let cases = [
        ("f32", &[5i64, 130, 250][..], 40, 0),
        ("bf16", &[5, 130, 250], 40, 0),
        ("f32", &many, 10, 0),
        ("f32", &prefixed, 20, 128),
        ("bf16", &prefixed, 20, 129),
        ("f32", &[130, 131, 300], 40, 129),
    ];
    for (dtype, lens, steps, shared) in cases {
        let model = small_model(dtype);
        let _fused_projections = model.fuse_projections().unwrap();
        kernels::set_enabled(true);
        let fused = decode_logits(&model, lens, steps, shared);
        kernels::set_enabled(false);
        let eager = decode_logits(&model, lens, steps, shared);
        kernels::set_enabled(true);
        let diff = (&fused - &eager).abs().max().double_value(&[]);
        let scale = eager.abs().max().double_value(&[]);
        let same_argmax =
            fused.argmax(-1, false).eq_tensor(&eager.argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float);
        println!(
            "DECODE {dtype}, {} rows, shared prefix {shared}: fused vs libtorch ops max |diff| {diff:.3e} (logits up \
             to {scale:.2}), same argmax in {:.1}% of {} steps x rows",
            lens.len(),
            same_argmax.double_value(&[]) * 100.0,
            fused.size()[0] * fused.size()[1]
        );
        // f32: libtorch's attention and the kernels add in different orders, and this model's large weights
        // (initializer_range 0.5) carry the difference to ~1e-4 of the largest logit (2.7e-3 of 38.6 over 80 rows).
        let tolerance = if dtype == "f32" { 2e-4 * scale.max(1.0) } else { 0.1 * scale.max(1.0) };
        assert!(diff <= tolerance, "{dtype}: max |diff| {diff} > {tolerance}");
        if shared > 0 {
            // Against the fused path reading the rows' own copies.
            kernels::set_shared_prefix_attention(false);
            let copies = decode_logits(&model, lens, steps, shared);
            kernels::set_shared_prefix_attention(true);
            let diff = (&fused - &copies).abs().max().double_value(&[]);
            println!(
                "DECODE {dtype}, shared prefix {shared}: once for all rows vs each row's copy max |diff| {diff:.3e}"
            );
            assert!(diff <= tolerance, "{dtype}: shared vs copies max |diff| {diff} > {tolerance}");
        }
    }
}

fn request(sampling: Sampling) -> GenerationRequest {
    let prompts = (0..6u64)
        .map(|id| PromptInput {
            id,
            token_ids: (0..(10 + 40 * id as usize)).map(|i| (i * 13 % 990 + 5) as u32).collect(),
        })
        .collect();
    GenerationRequest {
        prompts,
        n: 3,
        sampling,
        max_tokens: 150,
        stop: StopRules { ignore_eos: true, ..StopRules::default() },
        seed: 5,
        ..GenerationRequest::default()
    }
}

type Samples = stasc::generate::Generated<stasc::generate::SampleOutput>;

/// Checks on `model` that sampled tokens replayed from CUDA graphs equal eager steps' (options `base`, `path` on),
/// then prints how many greedy tokens agree with `path` on and off (up to each sample's first difference) and
/// requires all of them to in f32. Returns the graphs' run.
fn graphs_match_eager_and_greedy_agrees(
    model: &CausalLm,
    dtype: &str,
    request: impl Fn(Sampling) -> GenerationRequest,
    base: &GenerateOptions,
    (what, path): (&str, fn(bool)),
) -> Samples {
    let eager = GenerateOptions { cuda_graphs: false, ..base.clone() };
    let sampled = request(Sampling::TopKThenTopP { temperature: 0.8, top_k: 40, top_p: 0.9 });
    path(true);
    let graphs = generate_ids(model, &sampled, base).unwrap();
    assert!(graphs.stats.cuda_graphs >= 2, "{dtype}: {:?}", graphs.stats);
    let steps = generate_ids(model, &sampled, &eager).unwrap();
    let tokens = |g: &Samples| -> Vec<Vec<Vec<u32>>> {
        g.prompts.iter().map(|p| p.samples.iter().map(|s| s.token_ids.clone()).collect()).collect()
    };
    assert_eq!(tokens(&graphs), tokens(&steps), "{dtype}: graphs vs eager steps, {what}");
    let greedy = request(Sampling::Greedy);
    let on = generate_ids(model, &greedy, base).unwrap();
    path(false);
    let off = generate_ids(model, &greedy, base).unwrap();
    path(true);
    let (mut same, mut total) = (0usize, 0usize);
    for (a, b) in on.prompts.iter().zip(&off.prompts) {
        for (x, y) in a.samples.iter().zip(&b.samples) {
            same += x.token_ids.iter().zip(&y.token_ids).take_while(|(p, q)| p == q).count();
            total += x.token_ids.len();
        }
    }
    println!("GREEDY {dtype}: {what} agree on {same} of {total} tokens (up to each sample's first difference)");
    if dtype == "f32" {
        assert_eq!(same, total, "f32 greedy tokens differ: {what}");
    }
    graphs
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn fused_kernels_are_captured_by_cuda_graphs_and_keep_greedy_tokens() {
    for dtype in ["f32", "bf16"] {
        let model = small_model(dtype);
        let base = GenerateOptions { cuda_graph_bucket: 64, ..GenerateOptions::for_device(model.device()) };
        graphs_match_eager_and_greedy_agrees(
            &model,
            dtype,
            request,
            &base,
            ("fused vs libtorch ops", kernels::set_enabled),
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn shared_prefix_attention_is_captured_by_cuda_graphs_and_keeps_greedy_tokens() {
    // Eight prompts sharing their first 150 tokens, with suffixes of 3 to 80 tokens of their own.
    let prompts: Vec<PromptInput> = (0..8u64)
        .map(|id| PromptInput {
            id,
            token_ids: (0..150)
                .map(|i| (i * 13 % 990 + 5) as u32)
                .chain((0..3 + 11 * id as usize).map(|i| ((i as u64 * 7 + id * 31) % 990 + 5) as u32))
                .collect(),
        })
        .collect();
    let request = |sampling| GenerationRequest { prompts: prompts.clone(), max_tokens: 120, ..request(sampling) };
    kernels::set_enabled(true);
    for dtype in ["f32", "bf16"] {
        let model = small_model(dtype);
        let base = GenerateOptions {
            cuda_graph_bucket: 64,
            shared_prefix_min_tokens: Some(8),
            ..GenerateOptions::for_device(model.device())
        };
        let what = ("shared prefix read once vs each row's copy", kernels::set_shared_prefix_attention as fn(bool));
        let graphs = graphs_match_eager_and_greedy_agrees(&model, dtype, request, &base, what);
        assert_eq!(graphs.stats.shared_prefix_tokens, 150, "{dtype}: {:?}", graphs.stats);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn launching_windows_ahead_gives_the_samples_of_reading_each_first() {
    // 18 samples on 8 rows (rows are refilled, then the tail runs without waiting work), ending at their own steps
    // by EOS (2% of the vocabulary), max_tokens or one stop token seen in a window read ahead.
    kernels::set_enabled(true);
    let eos: Vec<u32> = (0..20).map(|i| 7 + 50 * i).collect();
    // Sampled lengths of every run: some must end by max_tokens (150) and some by EOS (which of the runs draws
    // them depends on the kernels' rounding).
    let mut sampled_lens = Vec::new();
    for dtype in ["f32", "bf16"] {
        let model = small_model(dtype);
        for sampling in [Sampling::Greedy, Sampling::TopKThenTopP { temperature: 0.9, top_k: 50, top_p: 0.95 }] {
            let request = GenerationRequest {
                stop: StopRules { eos_token_ids: eos.clone(), ..StopRules::default() },
                ..request(sampling)
            };
            let options =
                GenerateOptions { max_batch: 8, cuda_graph_bucket: 64, ..GenerateOptions::for_device(model.device()) };
            stasc::generate::set_launch_ahead(false);
            let read_first = generate_ids(&model, &request, &options).unwrap();
            stasc::generate::set_launch_ahead(true);
            let ahead = generate_ids(&model, &request, &options).unwrap();
            let samples = |g: &Samples| -> Vec<(Vec<u32>, String)> {
                let all = g.prompts.iter().flat_map(|p| &p.samples);
                all.map(|s| (s.token_ids.clone(), format!("{:?}", s.finish_reason))).collect()
            };
            let lens: Vec<usize> = samples(&ahead).iter().map(|(t, _)| t.len()).collect();
            println!(
                "LAUNCH AHEAD {dtype} {sampling:?}: {} windows ahead, {} decode steps (reading each first: {}); \
                 sample lengths {lens:?}",
                ahead.stats.windows_ahead, ahead.stats.decode_steps, read_first.stats.decode_steps
            );
            assert_eq!(read_first.stats.windows_ahead, 0);
            assert!(ahead.stats.windows_ahead > 0, "{dtype}: {:?}", ahead.stats);
            if sampling != Sampling::Greedy {
                sampled_lens.extend(lens);
            }
            assert_eq!(samples(&ahead), samples(&read_first), "{dtype} {sampling:?}");
        }
    }
    assert!(sampled_lens.iter().any(|&l| l < 150) && sampled_lens.contains(&150), "{sampled_lens:?}");
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn gemv_kernels_are_captured_by_cuda_graphs() {
    // 18 samples on 4 rows: every decode step's products run gemv.cu (bf16, at most 4 rows).
    kernels::set_enabled(true);
    let model = small_model("bf16");
    let base = GenerateOptions { max_batch: 4, cuda_graph_bucket: 64, ..GenerateOptions::for_device(model.device()) };
    let graphs =
        graphs_match_eager_and_greedy_agrees(&model, "bf16", request, &base, ("gemv vs cuBLAS", kernels::set_gemv));
    assert_eq!(graphs.stats.rows, 4);
}

/// The fused kernels of cuda:0, switched on.
fn cuda_kernels() -> &'static kernels::Kernels {
    kernels::set_enabled(true);
    kernels::for_tensor(&Tensor::zeros([1], (Kind::BFloat16, Device::Cuda(0)))).expect("fused kernels load")
}

/// Decode attention in f32 from the kernel's bf16 inputs: `q` [kv_heads, rows, group, d], caches
/// [rows, kv_heads, max_len, d], row r attending to positions 0..=positions[r]; [rows, 1, heads * d].
fn attention_f32(q: &Tensor, k: &Tensor, v: &Tensor, positions: &[i64], scale: f64) -> Tensor {
    let f = |t: Tensor| t.to_kind(Kind::Float);
    let rows: Vec<Tensor> = positions
        .iter()
        .enumerate()
        .map(|(r, &p)| {
            let (kr, vr) = (f(k.get(r as i64).narrow(1, 0, p + 1)), f(v.get(r as i64).narrow(1, 0, p + 1)));
            let qr = f(q.select(1, r as i64));
            let w = (qr.matmul(&kr.transpose(1, 2)) * scale).softmax(-1, Kind::Float);
            w.matmul(&vr).reshape([1, 1, -1])
        })
        .collect();
    Tensor::cat(&rows, 0)
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn tensor_core_decode_attention_gives_the_f32_attention_on_cuda() {
    let (k, device) = (cuda_kernels(), Device::Cuda(0));
    tch::manual_seed(5);
    // Qwen2.5-1.5B (128 x 6, 2 K/V heads), SmolLM2 (64 x 3) and a full group of 8; one long row (short chunks,
    // idle warps) and rows whose lengths cross the 16-position tiles, the warps' 32 and the chunks' 128.
    let lens: Vec<i64> = vec![1, 2, 16, 17, 31, 32, 33, 100, 127, 128, 129, 200, 255, 256, 257, 500, 700, 1000];
    for (head_dim, group, kv_heads) in [(128, 6, 2), (64, 3, 3), (128, 8, 1)] {
        for positions in [vec![700i64], lens.iter().map(|l| l - 1).collect()] {
            let rows = positions.len() as i64;
            let max_len = 1024;
            let bf16 =
                |shape: &[i64], sd: f64| (Tensor::randn(shape, (Kind::Float, device)) * sd).to_kind(Kind::BFloat16);
            let q = bf16(&[kv_heads, rows, group, head_dim], 3.0);
            let (kc, vc) =
                (bf16(&[rows, kv_heads, max_len, head_dim], 1.0), bf16(&[rows, kv_heads, max_len, head_dim], 1.0));
            let pos = Tensor::from_slice(&positions).to_device(device);
            let attend = positions.iter().max().unwrap() + 1;
            let scale = 1.0 / (head_dim as f64).sqrt();
            let run = |mma: bool| {
                kernels::set_mma_attention(mma);
                let out =
                    k.decode_attention(&q, &kc, &vc, &pos, attend, scale, None).unwrap().expect("takes the shape");
                kernels::set_mma_attention(true);
                out.to_kind(Kind::Float)
            };
            let (tensor_cores, cuda_cores) = (run(true), run(false));
            let exact = attention_f32(&q, &kc, &vc, &positions, scale);
            let err = |t: &Tensor| (t - &exact).abs().max().double_value(&[]);
            let (e_mma, e_core) = (err(&tensor_cores), err(&cuda_cores));
            let (largest, largest_v) = (exact.abs().max().double_value(&[]), vc.abs().max().double_value(&[]));
            println!(
                "MMA ATTENTION d {head_dim} group {group} rows {rows}: max |tensor cores - f32| {e_mma:.3e}, CUDA \
                 cores {e_core:.3e} (outputs up to {largest:.2})"
            );
            // Weights rounded to bf16 (each within 2^-9 of itself) move the normalised weights by at most 2^-8 in
            // all, so an output by at most 2^-8 of the largest value; its own rounding adds half a bf16 step.
            let bound = (largest_v / 256.0 + largest / 512.0) * 1.05;
            assert!(e_mma <= bound, "d {head_dim} group {group} rows {rows}: {e_mma} > {bound}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn gemv_kernel_gives_the_products_of_cublas_on_cuda() {
    let (k, device) = (cuda_kernels(), Device::Cuda(0));
    tch::manual_seed(11);
    // Qwen2.5-1.5B's q/k/v, o, gate/up, down and output projections, and shapes with partial warps and blocks.
    let shapes = [(2048, 1536, true), (1536, 1536, false), (17920, 1536, false), (1536, 8960, false)];
    let odd = [(151936, 1536, false), (4099, 40, true), (5, 8, true), (7, 4104, true)];
    for (n, width, with_bias) in shapes.into_iter().chain(odd) {
        let w = (Tensor::randn([n, width], (Kind::Float, device)) * 0.05).to_kind(Kind::BFloat16);
        let b = with_bias.then(|| Tensor::randn([n], (Kind::Float, device)).to_kind(Kind::BFloat16));
        for rows in 1..=kernels::GEMV_ROWS {
            let x = Tensor::randn([rows, 1, width], (Kind::Float, device)).to_kind(Kind::BFloat16);
            kernels::set_gemv(false);
            assert!(k.gemv(&x, &w, b.as_ref()).unwrap().is_none(), "gemv off: cuBLAS");
            kernels::set_gemv(true);
            let fused = k.gemv(&x, &w, b.as_ref()).unwrap().expect("gemv takes the shape");
            let float = |t: &Tensor| t.to_kind(Kind::Float);
            let exact = float(&x).linear(&float(&w), b.as_ref().map(float).as_ref());
            let cublas = x.linear(&w, b.as_ref());
            let err = |t: &Tensor| (float(t) - &exact).abs().max().double_value(&[]);
            let largest = exact.abs().max().double_value(&[]);
            let (e_fused, e_cublas) = (err(&fused), err(&cublas));
            if rows == 1 || rows == kernels::GEMV_ROWS {
                println!(
                    "GEMV rows {rows} n {n} k {width}: max |gemv - f32 product| {e_fused:.3e}, cuBLAS bf16 \
                     {e_cublas:.3e} (values up to {largest:.2})"
                );
            }
            assert_eq!(fused.size(), cublas.size());
            // f32 sums rounded once to bf16: within half a bf16 step of the largest value (2^-8 of it), plus the
            // f32 sums' own rounding.
            assert!(e_fused <= largest / 256.0 * 1.01, "rows {rows} n {n} k {width}: {e_fused} (largest {largest})");
        }
    }
}

/// Runs `steps` AdamW steps (the first at lr 0, clipping to norm 1, weight decay 0.1) on copies of `init` with
/// gradients `grads[step][tensor]`; returns the final parameters flattened into one f32 tensor, and the time of
/// the optimiser calls.
fn adamw_run(init: &[(String, Tensor)], grads: &[Vec<Tensor>], fused: bool) -> (Tensor, f64) {
    use stasc::config::choices::DecayParameters;
    use stasc::model::Architecture;
    use stasc::train::optim::{AdamW, AdamWConfig};
    kernels::set_enabled(fused);
    let params: Vec<(String, Tensor)> =
        init.iter().map(|(n, t)| (n.clone(), t.copy().detach().set_requires_grad(true))).collect();
    let handles: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(params, cfg, DecayParameters::Names, Architecture::Qwen2, None).unwrap();
    let mut seconds = 0.0;
    for (step, step_grads) in grads.iter().enumerate() {
        let loss = handles.iter().zip(step_grads).map(|(p, g)| (p * g).sum(Kind::Float)).fold(None, |a, l| {
            Some(match a {
                None => l,
                Some(a) => a + l,
            })
        });
        loss.unwrap().backward();
        sync();
        let t0 = Instant::now();
        let _ = opt.clip_grad_norm(1.0).unwrap();
        opt.step(if step == 0 { 0.0 } else { 1e-3 * step as f64 }).unwrap();
        sync();
        seconds += t0.elapsed().as_secs_f64();
    }
    kernels::set_enabled(true);
    let flat: Vec<Tensor> = handles.iter().map(|t| t.detach().to_kind(Kind::Float).flatten(0, -1)).collect();
    (Tensor::cat(&flat, 0), seconds)
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn fused_adamw_gives_the_libtorch_ops_parameters_on_cuda() {
    let device = Device::Cuda(0);
    tch::manual_seed(7);
    // Odd sizes (a tail that is not a multiple of four), an undecayed bias and norm, and one large tensor.
    let shapes: [(&str, &[i64]); 4] = [
        ("model.layers.0.mlp.down_proj.weight", &[1536, 8960]),
        ("model.layers.0.self_attn.q_proj.bias", &[1537]),
        ("model.layers.0.input_layernorm.weight", &[1535]),
        ("lm_head.weight", &[333, 77]),
    ];
    let mut failures = Vec::new();
    for kind in [Kind::Float, Kind::BFloat16] {
        let init: Vec<(String, Tensor)> = shapes
            .iter()
            .map(|(n, s)| (n.to_string(), (Tensor::randn(*s, (Kind::Float, device)) * 0.02).to_kind(kind)))
            .collect();
        let grads: Vec<Vec<Tensor>> = (0..6)
            .map(|step| {
                init.iter()
                    .map(|(_, t)| {
                        let scale = 0.001 * (step + 1) as f64;
                        (Tensor::randn(t.size(), (Kind::Float, device)) * scale).to_kind(kind)
                    })
                    .collect()
            })
            .collect();
        let (fused, fused_s) = adamw_run(&init, &grads, true);
        let (eager, eager_s) = adamw_run(&init, &grads, false);
        let start: Vec<Tensor> = init.iter().map(|(_, t)| t.to_kind(Kind::Float).flatten(0, -1)).collect();
        let moved = (&eager - Tensor::cat(&start, 0)).abs().max().double_value(&[]);
        let differ = fused.ne_tensor(&eager).sum(Kind::Int64).int64_value(&[]);
        let max_diff = (&fused - &eager).abs().max().double_value(&[]);
        println!(
            "ADAMW {kind:?}: {differ} of {} parameters differ from the libtorch ops (max |diff| {max_diff:.3e}; the \
             update moved parameters by up to {moved:.3e}); 6 steps in {:.2} ms fused, {:.2} ms libtorch ops",
            fused.numel(),
            fused_s * 1e3,
            eager_s * 1e3
        );
        assert!(moved > 0.0, "the steps must move the parameters");
        let ulp = if kind == Kind::BFloat16 { 2f64.powi(-7) } else { 2f64.powi(-23) };
        let rel = ((&fused - &eager).abs() / (eager.abs() + 1e-30)).max().double_value(&[]);
        println!("ADAMW {kind:?}: largest relative difference {rel:.3e} (one ulp: {ulp:.3e})");
        if differ != 0 {
            failures.push(format!("{kind:?}: {differ} parameters differ, by up to {rel:.3e} relative"));
        }
    }
    assert!(failures.is_empty(), "the fused update must round where the libtorch ops round: {failures:?}");
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn packed_norm_and_silu_kernels_match_the_scalar_ones_on_cuda() {
    // Rows one element off a 16-byte boundary take the scalar kernels; copies of them the packed (8 a thread) ones.
    let (rows, hidden, width) = (37i64, 1536i64, 8960i64);
    let device = Device::Cuda(0);
    let off = |n: i64| {
        let buf = (Tensor::randn([n + 1], (Kind::Float, device)) * 4.0).to_kind(Kind::BFloat16);
        buf.narrow(0, 1, n)
    };
    let (x, r, gu) = (off(rows * hidden), off(rows * hidden), off(rows * 2 * width));
    let (x, r, gu) = (x.view([rows, hidden]), r.view([rows, hidden]), gu.view([rows, 2 * width]));
    let w = Tensor::rand([hidden], (Kind::Float, device)).to_kind(Kind::BFloat16);
    let k = kernels::for_tensor(&x).expect("kernels load on the GPU");
    let (sum_scalar, normed_scalar) = k.add_rms_norm(&x, Some(&r), &w, 1e-6).unwrap().unwrap();
    let (sum_packed, normed_packed) = k.add_rms_norm(&x.copy(), Some(&r.copy()), &w, 1e-6).unwrap().unwrap();
    let silu_scalar = k.silu_mul(&gu, width).unwrap().unwrap();
    let silu_packed = k.silu_mul(&gu.copy(), width).unwrap().unwrap();
    let (no_residual_scalar, no_residual_packed) = (
        k.add_rms_norm(&x, None, &w, 1e-6).unwrap().unwrap().1,
        k.add_rms_norm(&x.copy(), None, &w, 1e-6).unwrap().unwrap().1,
    );
    let to_f = |t: &Tensor| t.to_kind(Kind::Float);
    let max_diff = |a: &Tensor, b: &Tensor| (to_f(a) - to_f(b)).abs().max().double_value(&[]);
    // Same roundings: the sums and SiLU bit for bit; the norm sums its squares in another order, so its outputs may
    // differ by a bf16 rounding step where the scale's last f32 bits differ.
    assert_eq!(max_diff(&sum_scalar, &sum_packed), 0.0);
    assert_eq!(max_diff(&silu_scalar, &silu_packed), 0.0);
    for (a, b) in [(&normed_scalar, &normed_packed), (&no_residual_scalar, &no_residual_packed)] {
        let scale = to_f(a).abs().max().double_value(&[]);
        let differ = to_f(a).ne_tensor(&to_f(b)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        println!("NORM8: max |diff| {:.3e} (values up to {scale:.2}), {:.4}% differ", max_diff(a, b), differ * 100.0);
        assert!(max_diff(a, b) <= scale / 64.0 && differ < 0.01);
    }
}

/// The largest difference between two tensors in units of one bf16 step at the larger's magnitude (2^-8 of it).
fn bf16_steps(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-30) / 256.0;
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[]) / scale
}

/// The training passes' autograd ops (train_ops.cu) against libtorch's ops on the same bf16 and f32 inputs:
/// SiLU-and-multiply computes and rounds as libtorch's silu, mul and their backward kernels do, so its output and
/// both gradients are theirs to the bit; the rotary embedding's forward rounds as mul and addcmul store (the same
/// bits), and its backward rounds once where libtorch's rounds three times: no further from the gradient computed in
/// f32 than libtorch's, and within a bf16 step of the largest value. Rotating the first heads only gives those
/// heads' values and gradients and copies the rest; SiLU-and-multiply of a fused gate/up output gives the separate
/// op's values and gradients; the LM head's cross-entropy gives libtorch's f32 loss of the upcast logits within f32
/// rounding and its gradient within a rounding of the logits' dtype.
#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn training_op_kernels_give_libtorch_ops_values_and_gradients_on_cuda() {
    let dev = Device::Cuda(0);
    tch::manual_seed(5);
    for kind in [Kind::BFloat16, Kind::Float] {
        // SiLU-and-multiply over [tokens, width] with an odd count (the scalar kernel) and a multiple of 8.
        for (tokens, width) in [(37, 88), (13, 7)] {
            let leaf =
                || (Tensor::randn([tokens, width], (Kind::Float, dev)) * 3.0).to_kind(kind).set_requires_grad(true);
            let (a, b) = (leaf(), leaf());
            let (a2, b2) = (a.detach().copy().set_requires_grad(true), b.detach().copy().set_requires_grad(true));
            let g = Tensor::randn([tokens, width], (Kind::Float, dev)).to_kind(kind);
            let fused = kernels::silu_mul_autograd(&a, &b).unwrap().expect("the kernel applies");
            let ops = a2.silu() * &b2;
            (&fused * &g).sum(Kind::Float).backward();
            (&ops * &g).sum(Kind::Float).backward();
            let diffs =
                [bf16_steps(&fused, &ops), bf16_steps(&a.grad(), &a2.grad()), bf16_steps(&b.grad(), &b2.grad())];
            println!("TRAIN OPS silu_mul {kind:?} {tokens}x{width}: output, da, db differ by {diffs:?} bf16 steps");
            // bf16: the same bits; f32: within f32 rounding (a thousandth of a bf16 step).
            let bound = if kind == Kind::BFloat16 { 0.0 } else { 1e-3 };
            assert!(diffs.iter().all(|d| *d <= bound), "silu_mul {kind:?}");
        }
        // The rotary embedding of [1, tokens, heads, d] by random tables (sin sign-folded).
        // Heads of 128 (eight pairs a thread in bf16) and of 12 (a pair a thread).
        for (tokens, heads, d) in [(45, 6, 128), (9, 2, 12)] {
            let x = Tensor::randn([1, tokens, heads, d], (Kind::Float, dev)).to_kind(kind).set_requires_grad(true);
            let x2 = x.detach().copy().set_requires_grad(true);
            let cos = Tensor::randn([tokens, d], (Kind::Float, dev)).to_kind(kind);
            let sin = Tensor::randn([tokens, d], (Kind::Float, dev)).to_kind(kind);
            let g = Tensor::randn([1, tokens, heads, d], (Kind::Float, dev)).to_kind(kind);
            let fused = kernels::rotary_autograd(&x, &cos, &sin, heads).unwrap().expect("the kernel applies");
            let rotate = |x: &Tensor, c: &Tensor, s: &Tensor| {
                (x * c.view([1, tokens, 1, d])).addcmul(&x.roll([d / 2], [-1]), &s.view([1, tokens, 1, d]))
            };
            let ops = rotate(&x2, &cos, &sin);
            (&fused * &g).sum(Kind::Float).backward();
            (&ops * &g).sum(Kind::Float).backward();
            // The gradient in f32 from the same inputs.
            let f = |t: &Tensor| t.detach().to_kind(Kind::Float);
            let x3 = f(&x).set_requires_grad(true);
            (rotate(&x3, &f(&cos), &f(&sin)) * f(&g)).sum(Kind::Float).backward();
            let forward = bf16_steps(&fused, &ops);
            let (backward, backward_ops) = (bf16_steps(&x.grad(), &x3.grad()), bf16_steps(&x2.grad(), &x3.grad()));
            println!(
                "TRAIN OPS rotary {kind:?} d {d}: output off libtorch's by {forward:.3} bf16 steps; gradient off f32 \
                 by {backward:.3} (libtorch's ops {backward_ops:.3})"
            );
            // One rounding is at most half a step of an element's own magnitude: a step of the largest value.
            let bound = if kind == Kind::BFloat16 { 0.0 } else { 1e-3 };
            assert!(forward <= bound && backward <= 1.0 && backward <= backward_ops + 1e-3, "rotary {kind:?} d {d}");
            // The first heads only (a fused q/k/v output's queries and keys): those as rotated above, the rest
            // copied, both ways.
            let rot = heads - 1;
            let y = x.detach().copy().set_requires_grad(true);
            let partial = kernels::rotary_autograd(&y, &cos, &sin, rot).unwrap().expect("the kernel applies");
            (&partial * &g).sum(Kind::Float).backward();
            let (first, last) = (|t: &Tensor| t.narrow(2, 0, rot), |t: &Tensor| t.narrow(2, rot, 1));
            let same = |a: &Tensor, b: &Tensor| a.to_kind(Kind::Float).equal(&b.to_kind(Kind::Float));
            assert!(
                same(&first(&partial), &first(&fused)) && same(&last(&partial), &last(&x)),
                "rotary heads {kind:?}"
            );
            assert!(same(&first(&y.grad()), &first(&x.grad())) && same(&last(&y.grad()), &last(&g)), "rotary heads");
        }
        // SiLU-and-multiply of a fused gate/up output [tokens, 2 width]: the separate op's values and gradients.
        for (tokens, width) in [(37, 88), (13, 7)] {
            let both = (Tensor::randn([tokens, 2 * width], (Kind::Float, dev)) * 3.0).to_kind(kind);
            let both = both.set_requires_grad(true);
            let halves = both.detach().split_with_sizes([width, width], 1);
            let (a, b) = (halves[0].copy().set_requires_grad(true), halves[1].copy().set_requires_grad(true));
            let g = Tensor::randn([tokens, width], (Kind::Float, dev)).to_kind(kind);
            let rows = kernels::silu_mul_rows_autograd(&both).unwrap().expect("the kernel applies");
            let separate = kernels::silu_mul_autograd(&a, &b).unwrap().expect("the kernel applies");
            (&rows * &g).sum(Kind::Float).backward();
            (&separate * &g).sum(Kind::Float).backward();
            let grads = Tensor::cat(&[a.grad(), b.grad()], 1);
            println!("TRAIN OPS silu_mul_rows {kind:?} {tokens}x{width}: output and gradient as the separate op's");
            assert!(rows.equal(&separate) && both.grad().equal(&grads), "silu_mul_rows {kind:?} {tokens}x{width}");
        }
        // The LM head's loss: each row's cross-entropy against libtorch's on the logits upcast to f32 (a
        // vocabulary of whole 16-byte packs, Qwen2.5's, and an odd one), one row ignored (-100).
        for (rows, vocab) in [(37i64, 1000i64), (5, 151_936), (3, 13)] {
            let logits = (Tensor::randn([rows, vocab], (Kind::Float, dev)) * 4.0).to_kind(kind).set_requires_grad(true);
            let reference = logits.detach().copy().set_requires_grad(true);
            let mut ids: Vec<i64> = (0..rows).map(|r| (r * 7919 + 11) % vocab).collect();
            ids[1] = -100;
            let targets = Tensor::from_slice(&ids).to(dev);
            let g = Tensor::randn([rows], (Kind::Float, dev));
            let fused = kernels::cross_entropy_autograd(&logits, &targets).unwrap().expect("the kernel applies");
            let ops = reference.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
                &targets,
                None,
                tch::Reduction::None,
                -100,
                0.0,
            );
            (&fused * &g).sum(Kind::Float).backward();
            (&ops * &g).sum(Kind::Float).backward();
            let loss_diff = (&fused - &ops).abs().max().double_value(&[]);
            let scale = ops.abs().max().double_value(&[]).max(1.0);
            let (grad, grad_ops) = (logits.grad(), reference.grad());
            let steps = bf16_steps(&grad, &grad_ops);
            let differ = grad.to_kind(Kind::Float).ne_tensor(&grad_ops.to_kind(Kind::Float));
            let differ = differ.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            println!(
                "TRAIN OPS cross_entropy {kind:?} {rows}x{vocab}: loss off libtorch's by {loss_diff:.2e} (losses up \
                 to {scale:.1}); gradient by {steps:.3} bf16 steps of its largest, {:.4}% of elements differ",
                differ * 100.0
            );
            let ignored = grad.get(1).abs().max().double_value(&[]) + fused.get(1).abs().double_value(&[]);
            let bound = if kind == Kind::BFloat16 { 1.0 } else { 1e-3 };
            assert!(loss_diff <= 2e-5 * scale && ignored == 0.0, "cross_entropy {kind:?} {rows}x{vocab}: loss");
            // In bf16 the two f32 gradients round to the same value but for rare ties; in f32 they differ in the
            // last bits of many elements (another summation order), far below the bound.
            let rare = kind != Kind::BFloat16 || differ < 0.01;
            assert!(steps <= bound && rare, "cross_entropy {kind:?} {rows}x{vocab}: gradient");
        }
    }
}
