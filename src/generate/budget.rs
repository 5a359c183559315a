//! The memory budget of generation on one GPU, as arithmetic: `gpu_memory_utilization` x the card must hold the
//! weights (and their fused copies), the runtime's own memory, the larger of the prefill and decode activations,
//! and the KV pool; the pool gets what is left, up to what the largest batch of the longest sequences can use.
//! Pure, so it is tested on the CPU; the caller measures the card and reserves the pool it gives
//! (`CausalLm::reserve_kv_pool`), and the CUDA caching allocator's cap enforces the total.

/// What the budget depends on; sizes in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetInputs {
    /// Memory of the card.
    pub device_bytes: u64,
    /// Share of it generation may hold, in (0, 1].
    pub utilization: f64,
    /// Weights plus any inference copies (fused projections).
    pub weight_bytes: u64,
    /// CUDA context, cuBLAS workspaces, CUDA-graph bookkeeping: memory the process holds besides tensors.
    pub runtime_bytes: u64,
    /// KV cache per token position (K and V of every layer).
    pub kv_bytes_per_position: u64,
    /// Model dimensions the activations scale with.
    pub hidden_size: u64,
    /// MLP width.
    pub intermediate_size: u64,
    /// Query heads x head_dim + 2 x K/V heads x head_dim: the fused q/k/v width.
    pub qkv_width: u64,
    /// Vocabulary (logits and the sampler's sort are per row x vocabulary).
    pub vocab_size: u64,
    /// Bytes per activation element (2 for bf16).
    pub elt_bytes: u64,
    /// Padded prompt tokens per prefill forward pass.
    pub prefill_tokens: u64,
    /// Most sequences decoded at once.
    pub max_rows: u64,
    /// Longest prompt + generation of one sequence.
    pub max_model_len: u64,
}

/// How the budget is spent.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPlan {
    /// utilization x device.
    pub budget_bytes: u64,
    /// Peak activations of one prefill forward pass.
    pub prefill_activation_bytes: u64,
    /// Peak activations and sampling buffers of one decode step at `max_rows`.
    pub decode_activation_bytes: u64,
    /// The KV pool: `kv_positions` x the bytes per position.
    pub kv_pool_bytes: u64,
    /// Token positions the pool holds (rows x cache length, summed over rows).
    pub kv_positions: u64,
}

impl BudgetPlan {
    /// Everything the plan accounts for (at most `budget_bytes`).
    pub fn total_bytes(&self, inputs: &BudgetInputs) -> u64 {
        inputs.weight_bytes
            + inputs.runtime_bytes
            + self.prefill_activation_bytes.max(self.decode_activation_bytes)
            + self.kv_pool_bytes
    }
}

/// Why no plan fits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The share is not in (0, 1].
    #[error("gpu_memory_utilization must be in (0, 1], found {0}")]
    Utilization(f64),
    /// Not even one sequence of the longest length fits.
    #[error(
        "gpu_memory_utilization {utilization} gives generation {budget_gib:.2} GiB of the card, but the weights, \
         runtime and activations take {fixed_gib:.2} GiB and one sequence of {max_model_len} tokens needs \
         {row_gib:.2} GiB of KV cache more; raise gpu_memory_utilization or lower max_model_len"
    )]
    TooSmall {
        /// The share asked for.
        utilization: f64,
        /// The budget in GiB.
        budget_gib: f64,
        /// What is needed besides the KV cache, in GiB.
        fixed_gib: f64,
        /// The longest sequence.
        max_model_len: u64,
        /// Its KV cache in GiB.
        row_gib: f64,
    },
}

/// Activation bytes per prefill token: the residual stream, its norm and the attention output (4 x hidden), the
/// q/k/v projection, and the MLP's gate/up product with its activated half (3 x intermediate).
fn prefill_bytes_per_token(i: &BudgetInputs) -> u64 {
    (4 * i.hidden_size + i.qkv_width + 3 * i.intermediate_size) * i.elt_bytes
}

/// Bytes per decode row: the activations of one token, plus per vocabulary entry the logits and their sorted copy
/// (model dtype), the sort's indices and its scratch (int64 each), and the f32 scaled logits, probabilities,
/// cumulative sum and its shifted copy.
fn decode_bytes_per_row(i: &BudgetInputs) -> u64 {
    prefill_bytes_per_token(i) + i.vocab_size * (2 * i.elt_bytes + 8 + 8 + 4 * 4)
}

/// Splits the budget of `inputs` (see the module docs).
pub fn plan(inputs: &BudgetInputs) -> Result<BudgetPlan, BudgetError> {
    let u = inputs.utilization;
    if !(u > 0.0 && u <= 1.0) {
        return Err(BudgetError::Utilization(u));
    }
    let budget_bytes = (inputs.device_bytes as f64 * u) as u64;
    let prefill_activation_bytes = inputs.prefill_tokens * prefill_bytes_per_token(inputs);
    let decode_activation_bytes = inputs.max_rows * decode_bytes_per_row(inputs);
    let fixed = inputs.weight_bytes + inputs.runtime_bytes + prefill_activation_bytes.max(decode_activation_bytes);
    let per_position = inputs.kv_bytes_per_position.max(1);
    let wanted = inputs.max_rows.max(1) * inputs.max_model_len;
    let kv_positions = (budget_bytes.saturating_sub(fixed) / per_position).min(wanted);
    if kv_positions < inputs.max_model_len.max(1) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(BudgetError::TooSmall {
            utilization: u,
            budget_gib: gib(budget_bytes),
            fixed_gib: gib(fixed),
            max_model_len: inputs.max_model_len,
            row_gib: gib(inputs.max_model_len * per_position),
        });
    }
    Ok(BudgetPlan {
        budget_bytes,
        prefill_activation_bytes,
        decode_activation_bytes,
        kv_pool_bytes: kv_positions * per_position,
        kv_positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// Qwen2.5-1.5B in bf16 on a 140 GiB card.
    fn qwen_1p5b(utilization: f64) -> BudgetInputs {
        BudgetInputs {
            device_bytes: 140 * GIB,
            utilization,
            weight_bytes: 3_087_428_608 + 1_400_000_000,
            runtime_bytes: GIB,
            kv_bytes_per_position: 2 * 28 * 2 * 128 * 2,
            hidden_size: 1536,
            intermediate_size: 8960,
            qkv_width: (12 + 2 * 2) * 128,
            vocab_size: 151_936,
            elt_bytes: 2,
            prefill_tokens: 32_768,
            max_rows: 1024,
            max_model_len: 2048,
        }
    }

    #[test]
    fn the_pool_gets_what_is_left_up_to_what_the_batch_can_use() {
        let inputs = qwen_1p5b(0.15);
        let p = plan(&inputs).unwrap();
        // 21 GiB: 4.2 weights + 1 runtime + 5.6 decode buffers (1024 rows x 5.8 MB) leave ~10.2 GiB of KV cache.
        assert_eq!(p.budget_bytes, (140.0 * 0.15 * GIB as f64) as u64);
        assert_eq!(p.decode_activation_bytes, 1024 * ((4 * 1536 + 2048 + 3 * 8960) * 2 + 151_936 * 36));
        assert!(p.decode_activation_bytes > p.prefill_activation_bytes);
        let left = p.budget_bytes - inputs.weight_bytes - GIB - p.decode_activation_bytes;
        assert_eq!(p.kv_positions, left / 28_672);
        assert_eq!(p.kv_pool_bytes, p.kv_positions * 28_672);
        assert!(p.total_bytes(&inputs) <= p.budget_bytes);
        assert!(p.budget_bytes - p.total_bytes(&inputs) < 28_672, "only a position's rounding is left over");
        // At 0.9 the budget exceeds what 1024 rows of 2048 tokens can use: the pool stops there.
        let big = plan(&qwen_1p5b(0.9)).unwrap();
        assert_eq!(big.kv_positions, 1024 * 2048);
        assert!(big.total_bytes(&qwen_1p5b(0.9)) < big.budget_bytes);
    }

    #[test]
    fn a_budget_without_room_for_one_sequence_is_an_error() {
        let err = plan(&qwen_1p5b(0.05)).unwrap_err();
        assert!(matches!(err, BudgetError::TooSmall { .. }));
        let text = err.to_string();
        assert!(text.contains("gpu_memory_utilization 0.05") && text.contains("max_model_len"), "{text}");
        assert_eq!(plan(&qwen_1p5b(0.0)).unwrap_err(), BudgetError::Utilization(0.0));
        assert_eq!(plan(&qwen_1p5b(1.5)).unwrap_err(), BudgetError::Utilization(1.5));
        assert!(plan(&qwen_1p5b(f64::NAN)).is_err());
    }

    #[test]
    fn long_prefills_can_outweigh_decode_buffers() {
        let inputs = BudgetInputs { prefill_tokens: 1 << 19, max_rows: 8, ..qwen_1p5b(0.5) };
        let p = plan(&inputs).unwrap();
        assert_eq!(p.prefill_activation_bytes, (1 << 19) * (4 * 1536 + 2048 + 3 * 8960) * 2);
        assert!(p.prefill_activation_bytes > p.decode_activation_bytes);
        assert!(p.total_bytes(&inputs) <= p.budget_bytes);
        assert_eq!(p.kv_positions, 8 * 2048);
    }
}
