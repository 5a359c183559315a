//! Where each trainable tensor sits in the optimiser's flat buffers ([`super::optim`]), the ranges data-parallel
//! workers sum as one collective ([`GradBucket`]), and, when the optimiser's state is sharded over the workers
//! (ZeRO stage 1), which part of each range a worker updates ([`OwnedRange`]).
//!
//! Tensors that get weight decay come first (the update decays a prefix), and within each group tensors are in
//! decoder-layer order, so each layer's decayed tensors are one contiguous range: the layer's bucket, summed as
//! soon as backward has gone below the layer. Within a layer, the q, k and v projections come first, in that order,
//! so that their weights (and biases) lie back to back, as do gate and up in name order: training passes run each
//! group as one matrix product over an alias of the buffer (crate::model::layers::linear_rows). Everything else (embeddings, LM head, final norm, every undecayed
//! tensor) is the last bucket. A sharded layout pads every bucket to a multiple of `workers x ALIGN` elements, so
//! each worker's part of a bucket (the k-th of `workers` equal parts) starts 16-byte aligned for the fused update
//! and the collectives split it evenly; the padding stays zero (zero gradient, zero weight: AdamW keeps it zero).

/// Elements each worker's part of a sharded bucket is a multiple of (16 bytes of f32 or 32 of bf16).
pub const ALIGN: i64 = 16;

/// `n` rounded up to a multiple of `align` (> 0).
fn round_up(n: i64, align: i64) -> i64 {
    (n + align - 1) / align * align
}

/// The decoder layer a trainable tensor belongs to, from its HF (or PEFT) name: `model.layers.3.mlp...` (or
/// `base_model.model.model.layers.3...`) is layer 3.
pub fn decoder_layer(name: &str) -> Option<usize> {
    let (_, after) = name.split_once(".layers.").or_else(|| name.strip_prefix("layers.").map(|r| ("", r)))?;
    after.split('.').next()?.parse().ok()
}

/// Where a tensor goes within its decoder layer's group: q, k and v projections (weights, or biases) first and in
/// that order, everything else after them.
fn projection_order(name: &str) -> u8 {
    ["q_proj.", "k_proj.", "v_proj."].iter().position(|p| name.contains(p)).map_or(3, |k| k as u8)
}

/// A contiguous range of the flat gradient buffer that data-parallel workers sum as one collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradBucket {
    /// The decoder layer whose decayed tensors the range holds; `None` for the range of everything else.
    pub layer: Option<usize>,
    /// First element.
    pub offset: i64,
    /// Elements.
    pub numel: i64,
}

/// The part of a bucket one worker updates under a sharded optimiser, and where its state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedRange {
    /// First element in the flat parameter and gradient buffers.
    pub flat: i64,
    /// First element in the worker's (smaller) state buffers.
    pub state: i64,
    /// Elements.
    pub numel: i64,
    /// How many of them, from the first, get weight decay.
    pub decayed: i64,
}

/// One tensor's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// HF (or PEFT) name.
    pub name: String,
    /// First element.
    pub offset: i64,
    /// Elements.
    pub numel: i64,
    /// Whether it gets weight decay.
    pub decayed: bool,
}

/// The flat buffers' layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatLayout {
    /// Every tensor's place, in buffer order.
    pub places: Vec<Place>,
    /// Elements of each buffer, padding included.
    pub total: i64,
    /// The decayed prefix's length (the update decays `[0, decay_numel)`).
    pub decay_numel: i64,
    /// Buckets in the order backward completes them: last layer first, the rest at the end.
    pub buckets: Vec<GradBucket>,
    /// Workers the state is sharded over (1: not sharded, no padding).
    pub workers: usize,
}

impl FlatLayout {
    /// The layout of tensors given as (name, elements, decayed), in the caller's order within each decoder layer,
    /// for a state sharded over `workers` (1: unsharded, unpadded).
    pub fn new(tensors: &[(String, i64, bool)], workers: usize) -> FlatLayout {
        let align = if workers > 1 { workers as i64 * ALIGN } else { 1 };
        let mut ordered: Vec<&(String, i64, bool)> = tensors.iter().collect();
        // Stable: decayed first, then by layer (tensors outside the layers last), q/k/v first within a layer, the
        // caller's order otherwise.
        ordered.sort_by_key(|(name, _, decayed)| {
            (!decayed, decoder_layer(name).unwrap_or(usize::MAX), projection_order(name))
        });
        let bucket_layer = |t: &(String, i64, bool)| if t.2 { decoder_layer(&t.0) } else { None };
        let (mut places, mut buckets) = (Vec::with_capacity(ordered.len()), Vec::new());
        let (mut offset, mut decay_numel, mut bucket_start) = (0i64, 0i64, 0i64);
        for (k, t) in ordered.iter().enumerate() {
            places.push(Place { name: t.0.clone(), offset, numel: t.1, decayed: t.2 });
            offset += t.1;
            let layer = bucket_layer(t);
            if layer.is_some() && ordered.get(k + 1).map(|n| bucket_layer(n)) != Some(layer) {
                offset = round_up(offset, align);
                buckets.push(GradBucket { layer, offset: bucket_start, numel: offset - bucket_start });
                bucket_start = offset;
            }
            if t.2 {
                decay_numel = offset;
            }
        }
        let total = round_up(offset, align);
        buckets.reverse();
        if total > bucket_start {
            buckets.push(GradBucket { layer: None, offset: bucket_start, numel: total - bucket_start });
        }
        FlatLayout { places, total, decay_numel, buckets, workers }
    }

    /// The part of every bucket that worker `rank` updates (all of it when unsharded), in bucket order, with its
    /// place in the worker's state buffers.
    pub fn owned(&self, rank: usize) -> Vec<OwnedRange> {
        let mut state = 0;
        self.buckets
            .iter()
            .map(|b| {
                let numel = b.numel / self.workers as i64;
                let flat = b.offset + rank as i64 * numel;
                let decayed = (self.decay_numel - flat).clamp(0, numel);
                let range = OwnedRange { flat, state, numel, decayed };
                state += numel;
                range
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_layers_are_read_from_hf_and_peft_names() {
        assert_eq!(decoder_layer("model.layers.11.mlp.down_proj.weight"), Some(11));
        assert_eq!(decoder_layer("base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight"), Some(3));
        assert_eq!(decoder_layer("model.embed_tokens.weight"), None);
        assert_eq!(decoder_layer("model.norm.weight"), None);
        assert_eq!(decoder_layer("model.layers.x.weight"), None);
    }

    /// Three layers with a decayed weight (5 + layer elements) and an undecayed bias (3) each, an embedding (7)
    /// and a final norm (2), given in name order (layer 10 before layer 2).
    fn tensors() -> Vec<(String, i64, bool)> {
        let mut t = vec![("model.embed_tokens.weight".to_string(), 7, true)];
        for l in [1usize, 10, 2] {
            t.push((format!("model.layers.{l}.q_proj.bias"), 3, false));
            t.push((format!("model.layers.{l}.q_proj.weight"), 5 + l as i64, true));
        }
        t.push(("model.norm.weight".to_string(), 2, false));
        t
    }

    /// A Qwen2 layer's tensors in name order (what the trainer passes): q, k, v then the rest in name order, so
    /// that q/k/v and gate/up are each back to back.
    #[test]
    fn a_layers_q_k_v_and_gate_up_lie_back_to_back() {
        let names = [
            "input_layernorm.weight",
            "mlp.down_proj.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "post_attention_layernorm.weight",
            "self_attn.k_proj.bias",
            "self_attn.k_proj.weight",
            "self_attn.o_proj.weight",
            "self_attn.q_proj.bias",
            "self_attn.q_proj.weight",
            "self_attn.v_proj.bias",
            "self_attn.v_proj.weight",
        ];
        let tensors: Vec<(String, i64, bool)> = names
            .iter()
            .map(|n| (format!("model.layers.0.{n}"), 4, !n.contains("norm") && !n.contains("bias")))
            .collect();
        let layout = FlatLayout::new(&tensors, 2);
        let order: Vec<&str> = layout.places.iter().map(|p| p.name.strip_prefix("model.layers.0.").unwrap()).collect();
        assert_eq!(
            order,
            [
                "self_attn.q_proj.weight",
                "self_attn.k_proj.weight",
                "self_attn.v_proj.weight",
                "mlp.down_proj.weight",
                "mlp.gate_proj.weight",
                "mlp.up_proj.weight",
                "self_attn.o_proj.weight",
                "self_attn.q_proj.bias",
                "self_attn.k_proj.bias",
                "self_attn.v_proj.bias",
                "input_layernorm.weight",
                "post_attention_layernorm.weight",
            ]
        );
        // Back to back: each starts where the one before ends, padding only after the layer's decayed tensors.
        for pair in [[0, 1], [1, 2], [4, 5], [7, 8], [8, 9]] {
            let (a, b) = (&layout.places[pair[0]], &layout.places[pair[1]]);
            assert_eq!(a.offset + a.numel, b.offset, "{} then {}", a.name, b.name);
        }
    }

    #[test]
    fn unsharded_layout_is_decayed_first_in_layer_order_without_padding() {
        let layout = FlatLayout::new(&tensors(), 1);
        let names: Vec<&str> = layout.places.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.1.q_proj.weight",
                "model.layers.2.q_proj.weight",
                "model.layers.10.q_proj.weight",
                "model.embed_tokens.weight",
                "model.layers.1.q_proj.bias",
                "model.layers.2.q_proj.bias",
                "model.layers.10.q_proj.bias",
                "model.norm.weight",
            ]
        );
        assert_eq!((layout.total, layout.decay_numel), (6 + 7 + 15 + 7 + 9 + 2, 6 + 7 + 15 + 7));
        let b = |layer, offset, numel| GradBucket { layer, offset, numel };
        assert_eq!(layout.buckets, [b(Some(10), 13, 15), b(Some(2), 6, 7), b(Some(1), 0, 6), b(None, 28, 18)]);
        assert_eq!(
            layout.owned(0).iter().map(|r| (r.flat, r.numel, r.decayed)).collect::<Vec<_>>(),
            [(13, 15, 15), (6, 7, 7), (0, 6, 6), (28, 18, 7)]
        );
    }

    #[test]
    fn sharded_layout_pads_buckets_and_gives_each_worker_an_aligned_part() {
        let layout = FlatLayout::new(&tensors(), 2);
        let part = 2 * ALIGN;
        // Every bucket is padded to 2 x 16 elements; the rest holds the embedding (decayed) then the undecayed.
        let b = |layer, offset, numel| GradBucket { layer, offset, numel };
        assert_eq!(
            layout.buckets,
            [b(Some(10), 2 * part, part), b(Some(2), part, part), b(Some(1), 0, part), b(None, 3 * part, part)]
        );
        assert_eq!(layout.total, 4 * part);
        assert_eq!(layout.decay_numel, 3 * part + 7);
        let places: Vec<(i64, i64)> = layout.places.iter().map(|p| (p.offset, p.numel)).collect();
        assert_eq!(places[..4], [(0, 6), (part, 7), (2 * part, 15), (3 * part, 7)]);
        for rank in 0..2 {
            let owned = layout.owned(rank);
            let state: Vec<i64> = owned.iter().map(|r| r.state).collect();
            assert_eq!(state, [0, ALIGN, 2 * ALIGN, 3 * ALIGN]);
            for (r, bucket) in owned.iter().zip(&layout.buckets) {
                assert_eq!((r.flat, r.numel), (bucket.offset + rank as i64 * ALIGN, ALIGN));
                assert_eq!(r.flat % ALIGN, 0);
            }
            // Only the rest bucket mixes decayed and undecayed elements: the embedding's 7 sit in worker 0's part.
            let decayed: Vec<i64> = owned.iter().map(|r| r.decayed).collect();
            assert_eq!(decayed, if rank == 0 { [ALIGN, ALIGN, ALIGN, 7] } else { [ALIGN, ALIGN, ALIGN, 0] });
        }
    }
}
