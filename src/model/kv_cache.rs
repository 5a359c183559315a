//! The preallocated key/value cache: per layer, K and V of shape [rows, kv_heads, max_len, head_dim], written in
//! place. The model reads and writes it during a forward pass; its owner (the generator) decides which row holds
//! which sequence, forks prefilled rows into sample rows, and reuses rows of finished sequences.
//!
//! A [`KvPool`] is memory for caches reserved once (per loaded model, from the memory budget): a cache leased from
//! it is a view of any shape rows x max_len that fits, so generate calls with different shapes reuse the same
//! memory and the CUDA caching allocator does not grow from call to call.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::config::ModelConfig;
use super::error::ModelError;
use super::layers::LayerCache;

/// Keys and values of every layer for a fixed number of sequence rows.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    rows: i64,
    max_len: i64,
    row_index: Tensor,
    /// Held while this cache is a view of a pool's memory.
    _lease: Option<Arc<()>>,
}

impl KvCache {
    /// Allocates a zeroed cache of `rows` sequences of up to `max_len` tokens.
    pub fn new(cfg: &ModelConfig, rows: i64, max_len: i64, kind: Kind, device: Device) -> Result<Self, ModelError> {
        let shape = [rows, cfg.num_key_value_heads, max_len, cfg.head_dim];
        let context = || format!("allocating a KV cache of {rows} rows x {max_len} positions");
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for _ in 0..cfg.num_hidden_layers {
            let k = Tensor::f_zeros(shape, (kind, device)).map_err(ModelError::torch(context()))?;
            let v = Tensor::f_zeros(shape, (kind, device)).map_err(ModelError::torch(context()))?;
            layers.push((k, v));
        }
        let row_index = Tensor::f_arange(rows, (Kind::Int64, device)).map_err(ModelError::torch(context()))?;
        Ok(KvCache { layers, rows, max_len, row_index, _lease: None })
    }

    /// Number of sequence rows.
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// Positions per row.
    pub fn max_len(&self) -> i64 {
        self.max_len
    }

    /// [rows] int64 arange on the cache's device.
    pub fn row_index(&self) -> &Tensor {
        &self.row_index
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> i64 {
        self.layers.iter().map(|(k, v)| (k.numel() + v.numel()) as i64 * k.kind().elt_size_in_bytes() as i64).sum()
    }

    /// Copies the first `len` positions of rows `src` into rows `dst` ([n] int64 each): forks a prefilled prompt
    /// into the rows of its other samples.
    pub fn copy_rows(&mut self, src: &Tensor, dst: &Tensor, len: i64) -> Result<(), ModelError> {
        let len = len.min(self.max_len);
        for (k, v) in &mut self.layers {
            for t in [k, v] {
                let mut head = t.f_narrow(2, 0, len)?;
                let rows = head.f_index_select(0, src)?;
                let _ = head.f_index_copy_(0, dst, &rows).map_err(ModelError::torch("forking KV cache rows"))?;
            }
        }
        Ok(())
    }

    /// Copies positions `0..len` of row 0 of `prefix` into rows `dst` ([n] int64) of this cache: a prompt prefix
    /// prefilled once, shared by every prompt that starts with it.
    pub fn copy_prefix(&mut self, prefix: &KvCache, dst: &Tensor, len: i64) -> Result<(), ModelError> {
        let n = dst.size()[0];
        let context = || ModelError::torch("copying a shared prefix into KV cache rows");
        for ((k, v), (pk, pv)) in self.layers.iter_mut().zip(&prefix.layers) {
            for (t, p) in [(k, pk), (v, pv)] {
                let source = p.f_narrow(0, 0, 1)?.f_narrow(2, 0, len)?;
                let shape = [n, source.size()[1], len, source.size()[3]];
                let _ =
                    t.f_narrow(2, 0, len)?.f_index_copy_(0, dst, &source.f_expand(shape, false)?).map_err(context())?;
            }
        }
        Ok(())
    }

    /// One layer's K and V, read-only.
    pub(crate) fn layer_kv(&self, i: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[i];
        (k, v)
    }

    /// Mutable access to one layer's K and V.
    pub(crate) fn layer(&mut self, i: usize) -> LayerCache<'_> {
        let (k, v) = &mut self.layers[i];
        LayerCache { k, v }
    }
}

/// Memory for KV caches reserved once: per layer, flat K and V buffers of `positions` token positions (summed over
/// rows). One cache at a time is leased from it.
#[derive(Debug)]
pub struct KvPool {
    layers: Vec<(Tensor, Tensor)>,
    positions: i64,
    kv_heads: i64,
    head_dim: i64,
    lease: Arc<()>,
}

impl KvPool {
    /// Reserves (and zeroes, so no view ever reads uninitialised values) room for `positions` token positions.
    pub fn new(cfg: &ModelConfig, positions: i64, kind: Kind, device: Device) -> Result<Self, ModelError> {
        let numel = positions * cfg.num_key_value_heads * cfg.head_dim;
        let context = || format!("reserving a KV pool of {positions} positions");
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for _ in 0..cfg.num_hidden_layers {
            let k = Tensor::f_zeros([numel], (kind, device)).map_err(ModelError::torch(context()))?;
            let v = Tensor::f_zeros([numel], (kind, device)).map_err(ModelError::torch(context()))?;
            layers.push((k, v));
        }
        Ok(KvPool { layers, positions, kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim, lease: Arc::new(()) })
    }

    /// Token positions the pool holds (rows x max_len of the largest cache it can lend).
    pub fn positions(&self) -> i64 {
        self.positions
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> i64 {
        self.layers.iter().map(|(k, v)| (k.numel() + v.numel()) as i64 * k.kind().elt_size_in_bytes() as i64).sum()
    }

    /// A cache of `rows` x `max_len` viewing the pool's memory, or `None` when it does not fit or a cache leased
    /// earlier is still alive. Its contents are whatever the previous lease left (finite K/V values): rows are
    /// written before they are attended to.
    pub fn lease(&self, rows: i64, max_len: i64) -> Result<Option<KvCache>, ModelError> {
        if rows * max_len > self.positions || Arc::strong_count(&self.lease) > 1 {
            return Ok(None);
        }
        let numel = rows * self.kv_heads * max_len * self.head_dim;
        let shape = [rows, self.kv_heads, max_len, self.head_dim];
        let view = |t: &Tensor| t.f_narrow(0, 0, numel).and_then(|t| t.f_view(shape));
        let mut layers = Vec::with_capacity(self.layers.len());
        for (k, v) in &self.layers {
            layers.push((view(k)?, view(v)?));
        }
        let device = self.layers.first().map_or(Device::Cpu, |(k, _)| k.device());
        let row_index =
            Tensor::f_arange(rows, (Kind::Int64, device)).map_err(ModelError::torch("leasing a KV cache"))?;
        Ok(Some(KvCache { layers, rows, max_len, row_index, _lease: Some(self.lease.clone()) }))
    }
}
