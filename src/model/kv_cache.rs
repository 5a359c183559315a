//! The preallocated key/value cache: per layer, K and V of shape [rows, kv_heads, max_len, head_dim], written in
//! place. The model reads and writes it during a forward pass; its owner (the generator) decides which row holds
//! which sequence, forks prefilled rows into sample rows, and reuses rows of finished sequences.

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
        Ok(KvCache { layers, rows, max_len, row_index })
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

    /// Mutable access to one layer's K and V.
    pub(crate) fn layer(&mut self, i: usize) -> LayerCache<'_> {
        let (k, v) = &mut self.layers[i];
        LayerCache { k, v }
    }
}
