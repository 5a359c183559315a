//! Starting samples: free cache rows take pending (prompt, sample) work in request order, each prompt is prefilled
//! once (prompts batched and right-padded, chunked to a token budget) into its first row and forked into the rows of
//! its other samples, and every new row's first token is sampled from the prompt's last logits with its own draw 0.
//!
//! Shared prefix: the prompts of a STaSC phase all start with the same instruction and few-shot messages. The
//! longest prefix common to every prompt of the call is prefilled once into a one-row cache of its own; each
//! prompt's first row then gets a copy of those positions and only the rest of the prompt is prefilled, attending
//! to the copy. Rows are copied rather than shared copy-on-write because attention reads each row as one contiguous
//! sequence (libtorch's kernels take no block tables), and the copy costs a memory pass of the prefix per prompt
//! where prefilling it cost a forward pass. Decode steps also get the one-row prefix cache: the fused attention
//! (crate::kernels) reads the prefix there once for all rows instead of every row's copy.

use std::collections::VecDeque;

use tch::{Kind, Tensor};

use super::decode::{torch, DeviceState};
use super::engine::Row;
use super::request::{GenerateOptions, GenerationRequest, PromptOutput, SampleOutput};
use super::sampling::{sample_seed, uniform};
use super::GenerateError;
use crate::model::{CausalLm, KvCache, Pass};

/// A prompt started in a set of free cache rows: its first row is prefilled, the others forked from it.
pub(crate) struct PromptRows {
    prompt: usize,
    rows: Vec<usize>,
}

/// A prompt prefix common to every prompt of a call, prefilled once.
pub(crate) struct SharedPrefix {
    /// Its length in tokens (less than every prompt's, so each prompt keeps a token of its own to prefill).
    len: usize,
    /// Its K/V in row 0.
    cache: KvCache,
}

/// The longest prefix shared by all `prompts`, kept shorter than the shortest prompt.
pub(crate) fn common_prefix_len(prompts: &[(Vec<u32>, usize)]) -> usize {
    let Some(((first, _), rest)) = prompts.split_first() else { return 0 };
    let mut len = first.len().saturating_sub(1);
    for (tokens, _) in rest {
        len = len.min(tokens.len().saturating_sub(1));
        len = first.iter().zip(tokens).take(len).take_while(|(a, b)| a == b).count();
    }
    len
}

/// Prefills the prefix common to all prompts once, when it is at least `min_len` tokens and more than one prompt
/// shares it.
pub(crate) fn shared_prefix(
    model: &CausalLm,
    prompts: &[(Vec<u32>, usize)],
    min_len: usize,
) -> Result<Option<SharedPrefix>, GenerateError> {
    let len = common_prefix_len(prompts);
    if prompts.len() < 2 || len < min_len.max(1) {
        return Ok(None);
    }
    let device = model.device();
    let mut cache = KvCache::new(model.config(), 1, len as i64, model.kind(), device)?;
    let ids: Vec<i64> = prompts[0].0[..len].iter().map(|&t| t as i64).collect();
    let err = torch("prefilling the shared prefix");
    let ids = Tensor::f_from_slice(&ids).and_then(|x| x.f_to_device(device)?.f_view([1, len as i64])).map_err(err)?;
    let positions = Tensor::f_arange(len as i64, (Kind::Int64, device))
        .and_then(|p| p.f_view([1, len as i64]))
        .map_err(torch("prefilling the shared prefix"))?;
    let row = Tensor::f_zeros([1], (Kind::Int64, device)).map_err(torch("prefilling the shared prefix"))?;
    let _ = model.forward(&ids, &positions, Pass::Prefill { cache: &mut cache, rows: &row })?;
    Ok(Some(SharedPrefix { len, cache }))
}

impl SharedPrefix {
    /// Its length in tokens.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Its K/V: one row of exactly its length.
    pub(crate) fn cache(&self) -> &KvCache {
        &self.cache
    }
}

/// Prompt tokens run and prompt tokens whose K/V came from the shared prefix instead, of one prefill.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrefillCount {
    pub(crate) run: usize,
    pub(crate) reused: usize,
}

pub(crate) fn assign_rows(
    busy: &mut [Option<Row>],
    pending: &mut VecDeque<(usize, usize)>,
    request: &GenerationRequest,
    prompts: &[(Vec<u32>, usize)],
    outputs: &[PromptOutput<Option<SampleOutput>>],
) -> Vec<PromptRows> {
    let mut free = (0..busy.len()).filter(|&r| busy[r].is_none()).collect::<Vec<_>>().into_iter();
    let mut started = Vec::new();
    while let Some(&(prompt, next_sample)) = pending.front() {
        let mut rows = Vec::new();
        let mut sample = next_sample;
        let n = request.samples_of(prompt);
        while sample < n {
            let Some(r) = free.next() else { break };
            let seed = sample_seed(request.seed, outputs[prompt].prompt_id, sample as u64);
            let prompt_len = prompts[prompt].0.len();
            busy[r] =
                Some(Row { prompt, sample, seed, prompt_len, tokens: Vec::new(), generated: 0, pos: 0, fresh: true });
            rows.push(r);
            sample += 1;
        }
        if !rows.is_empty() {
            started.push(PromptRows { prompt, rows });
        }
        if sample == n {
            pending.pop_front();
        } else {
            pending.front_mut().expect("front exists").1 = sample;
            break;
        }
    }
    started
}

/// Prefills the started prompts (chunked to the prefill token budget) after the shared prefix when given, forks their
/// caches and samples each row's first token into history column 0. Returns the prompt tokens run and reused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prefill(
    model: &CausalLm,
    state: &mut DeviceState,
    started: &[PromptRows],
    busy: &mut [Option<Row>],
    prompts: &[(Vec<u32>, usize)],
    request: &GenerationRequest,
    options: &GenerateOptions,
    prefix: Option<&SharedPrefix>,
) -> Result<PrefillCount, GenerateError> {
    let mut count = PrefillCount::default();
    let skip = prefix.map_or(0, |p| p.len);
    let mut start = 0;
    while start < started.len() {
        // Grow the chunk while its padded size fits the budget (always at least one prompt).
        let mut end = start + 1;
        let mut longest = prompts[started[start].prompt].0.len() - skip;
        // Batch-invariant generation prefills every prompt alone.
        while end < started.len() && !options.batch_invariant {
            let l = longest.max(prompts[started[end].prompt].0.len() - skip);
            if l * (end + 1 - start) > options.max_prefill_tokens {
                break;
            }
            longest = l;
            end += 1;
        }
        let chunk = &started[start..end];
        let run = prefill_chunk(model, state, chunk, longest, busy, prompts, request, options, prefix)?;
        count.run += run;
        count.reused += skip * chunk.len();
        start = end;
    }
    Ok(count)
}

#[allow(clippy::too_many_arguments)]
fn prefill_chunk(
    model: &CausalLm,
    state: &mut DeviceState,
    chunk: &[PromptRows],
    longest: usize,
    busy: &mut [Option<Row>],
    prompts: &[(Vec<u32>, usize)],
    request: &GenerationRequest,
    options: &GenerateOptions,
    prefix: Option<&SharedPrefix>,
) -> Result<usize, GenerateError> {
    let device = model.device();
    // Only the tokens after the shared prefix are run; they sit at positions skip.. of their rows.
    let skip = prefix.map_or(0, |p| p.len);
    let (m, t) = (chunk.len() as i64, longest as i64);
    let mut ids = vec![0i64; chunk.len() * longest];
    let mut last = Vec::with_capacity(chunk.len());
    for (i, g) in chunk.iter().enumerate() {
        let tokens = &prompts[g.prompt].0[skip..];
        for (j, &tok) in tokens.iter().enumerate() {
            ids[i * longest + j] = tok as i64;
        }
        last.push(i as i64 * t + tokens.len() as i64 - 1);
    }
    let err = torch("prefill");
    let to_dev = |v: &[i64]| Tensor::f_from_slice(v).and_then(|x| x.f_to_device(device));
    let ids = to_dev(&ids).and_then(|x| x.f_view([m, t])).map_err(torch("prefill"))?;
    let positions = Tensor::f_arange_start(skip as i64, skip as i64 + t, (Kind::Int64, device))
        .and_then(|p| p.f_expand([m, t], false))
        .map_err(torch("prefill"))?;
    let prime: Vec<i64> = chunk.iter().map(|g| g.rows[0] as i64).collect();
    let prime_dev = to_dev(&prime).map_err(torch("prefill"))?;
    let hidden = match prefix {
        Some(p) => {
            state.cache.copy_prefix(&p.cache, &prime_dev, skip as i64)?;
            let pass = Pass::Extend { cache: &mut state.cache, rows: &prime_dev, start: skip as i64 };
            model.forward(&ids, &positions, pass)?
        }
        None => model.forward(&ids, &positions, Pass::Prefill { cache: &mut state.cache, rows: &prime_dev })?,
    };
    let last_hidden =
        hidden.f_reshape([m * t, -1]).and_then(|h| h.f_index_select(0, &to_dev(&last)?)).map_err(torch("prefill"))?;
    let logits = model.logits(&last_hidden)?;
    // Fork each prompt's cache into its other rows.
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    for g in chunk {
        for &r in &g.rows[1..] {
            src.push(g.rows[0] as i64);
            dst.push(r as i64);
        }
    }
    if !dst.is_empty() {
        let (src, dst) = (to_dev(&src).map_err(torch("fork"))?, to_dev(&dst).map_err(torch("fork"))?);
        state.cache.copy_rows(&src, &dst, skip as i64 + t)?;
    }
    // First token of every row, from its prompt's logits and its own uniform 0.
    let (mut rows, mut prompt_of, mut lens, mut u0) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, g) in chunk.iter().enumerate() {
        for &r in &g.rows {
            let row = busy[r].as_mut().expect("assigned row");
            rows.push(r as i64);
            prompt_of.push(i as i64);
            lens.push(row.prompt_len as i64);
            u0.push(uniform(row.seed, 0));
            row.generated = 1;
            row.pos = row.prompt_len as i64;
        }
    }
    let n = rows.len() as i64;
    let rows_dev = to_dev(&rows).map_err(torch("prefill"))?;
    let row_logits =
        logits.f_index_select(0, &to_dev(&prompt_of).map_err(torch("prefill"))?).map_err(torch("prefill"))?;
    let uniforms = if request.sampling.is_random() {
        Some(Tensor::f_from_slice(&u0).and_then(|u| u.f_to_device(device)).map_err(torch("prefill"))?)
    } else {
        None
    };
    let first = if options.batch_invariant {
        // One row at a time: the sampling kernels then see the same shape whatever the number of new rows.
        (0..n)
            .map(|i| {
                let u = uniforms.as_ref().map(|u| u.f_narrow(0, i, 1)).transpose()?;
                request.sampling.sample(&row_logits.f_narrow(0, i, 1)?, u.as_ref())
            })
            .collect::<Result<Vec<Tensor>, tch::TchError>>()
            .and_then(|v| Tensor::f_cat(&v, 0))
    } else {
        request.sampling.sample(&row_logits, uniforms.as_ref())
    }
    .and_then(|f| f.f_view([n, 1]))
    .map_err(torch("sampling"))?;
    let lens_dev = to_dev(&lens).and_then(|l| l.f_view([n, 1])).map_err(torch("prefill"))?;
    let _ = state.tokens.f_index_copy_(0, &rows_dev, &first).map_err(torch("prefill"))?;
    let _ = state.positions.f_index_copy_(0, &rows_dev, &lens_dev).map_err(torch("prefill"))?;
    let _ = state.history.f_narrow(1, 0, 1).and_then(|mut h| h.f_index_copy_(0, &rows_dev, &first)).map_err(err)?;
    Ok(chunk.iter().map(|g| prompts[g.prompt].0.len() - skip).sum())
}

#[cfg(test)]
mod tests {
    use super::common_prefix_len;

    fn p(tokens: &[u32]) -> (Vec<u32>, usize) {
        (tokens.to_vec(), 0)
    }

    #[test]
    fn the_common_prefix_leaves_every_prompt_a_token_of_its_own() {
        assert_eq!(common_prefix_len(&[]), 0);
        assert_eq!(common_prefix_len(&[p(&[1, 2, 3])]), 2);
        assert_eq!(common_prefix_len(&[p(&[1, 2, 3, 4]), p(&[1, 2, 3, 5, 6])]), 3);
        // A prompt that is the others' prefix keeps its last token to prefill.
        assert_eq!(common_prefix_len(&[p(&[1, 2, 3, 4]), p(&[1, 2, 3])]), 2);
        assert_eq!(common_prefix_len(&[p(&[1, 2]), p(&[7, 2]), p(&[1, 2, 3])]), 0);
        assert_eq!(common_prefix_len(&[p(&[5, 6, 7, 8]), p(&[5, 6, 9]), p(&[5, 6, 7, 1])]), 2);
    }
}
