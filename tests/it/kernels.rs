//! The fused CUDA kernels (crate::kernels) against the libtorch path they replace, on a GPU. They need one, so
//! they are ignored on the CPU and run by scripts/kernels/run.sh on the GPU machine (one at a time: they switch the
//! kernels on and off for the whole process). The CPU side of the same algorithms is tested in src/ (the sort-free
//! sampler in generate::sampling, the kernels' compilation in kernels).

use std::path::Path;
use std::time::Instant;

use stasc::generate::sampling::uniform;
use stasc::generate::{generate_ids, GenerateOptions, GenerationRequest, PromptInput, Sampling, StopRules};
use stasc::kernels;
use stasc::model::{CausalLm, LoadOptions, ModelConfig, Pass};
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
    let (rows, vocab) = (64i64, 151_936i64);
    let device = Device::Cuda(0);
    // Random logits on a grid (ties), scaled like a model's; -0.0 and 0.0 in every row.
    let base = (Tensor::randn([rows, vocab], (Kind::Float, device)) * 3.0 * 8.0).round() / 8.0;
    let _ = base.narrow(1, 0, 1).fill_(-0.0);
    let _ = base.narrow(1, 1, 1).fill_(0.0);
    let us: Vec<f32> = (0..rows as u64).map(|r| uniform(42, r)).collect();
    let us = Tensor::from_slice(&us).to_device(device);
    let (mut checked, mut kernel_s, mut sort_s) = (0, 0.0, 0.0);
    for kind in [Kind::BFloat16, Kind::Float] {
        let logits = base.to_kind(kind);
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
                assert_eq!(got, want, "{kind:?} {rule:?}");
                checked += got.len();
            }
        }
    }
    println!(
        "SAMPLER kernel == sort path for {checked} rows x {vocab} logits; time kernel {:.2} ms, sort {:.2} ms (first \
         calls included)",
        kernel_s * 1e3,
        sort_s * 1e3
    );
}

/// Logits of `steps` teacher-forced decode steps after prefilling rows of different lengths.
fn decode_logits(model: &CausalLm, lens: &[i64], steps: i64) -> Tensor {
    let device = model.device();
    let rows = lens.len() as i64;
    let mut cache = model.new_cache(rows, 512).unwrap();
    for (r, &len) in lens.iter().enumerate() {
        let ids = Tensor::arange(len, (Kind::Int64, device)).remainder(997).view([1, len]);
        let positions = Tensor::arange(len, (Kind::Int64, device)).view([1, len]);
        let row = Tensor::from_slice(&[r as i64]).to_device(device);
        let _ = model.forward(&ids, &positions, Pass::Prefill { cache: &mut cache, rows: &row }).unwrap();
    }
    let mut all = Vec::new();
    for step in 0..steps {
        let positions: Vec<i64> = lens.iter().map(|&l| l + step).collect();
        let attend = positions.iter().max().unwrap() + 1;
        let tokens: Vec<i64> = positions.iter().map(|p| (p * 7 + 3) % 997).collect();
        let tokens = Tensor::from_slice(&tokens).to_device(device).view([rows, 1]);
        let positions = Tensor::from_slice(&positions).to_device(device).view([rows, 1]);
        let hidden =
            model.forward(&tokens, &positions, Pass::Decode { cache: &mut cache, attend_len: attend }).unwrap();
        all.push(model.logits(&hidden.view([rows, -1])).unwrap().to_kind(Kind::Float));
    }
    Tensor::stack(&all, 0)
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn fused_decode_gives_the_logits_of_libtorch_ops_on_cuda() {
    // Rows of different lengths crossing the attention kernel's 128-position chunks.
    let lens = [5i64, 130, 250];
    for dtype in ["f32", "bf16"] {
        let model = small_model(dtype);
        let _fused_projections = model.fuse_projections().unwrap();
        kernels::set_enabled(true);
        let fused = decode_logits(&model, &lens, 40);
        kernels::set_enabled(false);
        let eager = decode_logits(&model, &lens, 40);
        kernels::set_enabled(true);
        let diff = (&fused - &eager).abs().max().double_value(&[]);
        let scale = eager.abs().max().double_value(&[]);
        let same_argmax =
            fused.argmax(-1, false).eq_tensor(&eager.argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float);
        println!(
            "DECODE {dtype}: fused vs libtorch ops max |diff| {diff:.3e} (logits up to {scale:.2}), same argmax in \
             {:.1}% of {} steps x rows",
            same_argmax.double_value(&[]) * 100.0,
            fused.size()[0] * fused.size()[1]
        );
        let tolerance = if dtype == "f32" { 1e-4 * scale.max(1.0) } else { 0.1 * scale.max(1.0) };
        assert!(diff <= tolerance, "{dtype}: max |diff| {diff} > {tolerance}");
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

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/kernels/run.sh"]
fn fused_kernels_are_captured_by_cuda_graphs_and_keep_greedy_tokens() {
    for dtype in ["f32", "bf16"] {
        let model = small_model(dtype);
        let base = GenerateOptions { cuda_graph_bucket: 64, ..GenerateOptions::for_device(model.device()) };
        let eager = GenerateOptions { cuda_graphs: false, ..base.clone() };
        let sampled = request(Sampling::TopKThenTopP { temperature: 0.8, top_k: 40, top_p: 0.9 });
        kernels::set_enabled(true);
        let graphs = generate_ids(&model, &sampled, &base).unwrap();
        assert!(graphs.stats.cuda_graphs >= 2, "{dtype}: {:?}", graphs.stats);
        let steps = generate_ids(&model, &sampled, &eager).unwrap();
        let samples = |g: &stasc::generate::Generated<stasc::generate::SampleOutput>| -> Vec<Vec<Vec<u32>>> {
            g.prompts.iter().map(|p| p.samples.iter().map(|s| s.token_ids.clone()).collect()).collect()
        };
        assert_eq!(samples(&graphs), samples(&steps), "{dtype}: graphs vs eager steps with fused kernels");
        let greedy = request(Sampling::Greedy);
        let fused = generate_ids(&model, &greedy, &base).unwrap();
        kernels::set_enabled(false);
        let plain = generate_ids(&model, &greedy, &base).unwrap();
        kernels::set_enabled(true);
        let (mut same, mut total) = (0usize, 0usize);
        for (a, b) in fused.prompts.iter().zip(&plain.prompts) {
            for (x, y) in a.samples.iter().zip(&b.samples) {
                same += x.token_ids.iter().zip(&y.token_ids).take_while(|(p, q)| p == q).count();
                total += x.token_ids.len();
            }
        }
        println!("GREEDY {dtype}: fused vs libtorch ops agree on {same} of {total} tokens (up to each sample's first difference)");
        if dtype == "f32" {
            assert_eq!(same, total, "f32 greedy tokens differ with fused kernels");
        }
    }
}
