//! The batched generation loop. A fixed set of KV-cache rows is kept busy: free rows take pending (prompt, sample)
//! work, each prompt is prefilled once into one row and its cache forked into the rows of its other samples, and all
//! rows decode together. Sampling and token bookkeeping stay on the device; the host synchronises only every few
//! steps (reading the tokens sampled since the last sync) to apply stop rules, collect finished samples and refill
//! their rows. Rows finishing by EOS or stop string keep decoding until the next sync; their extra tokens are dropped.
//! On CUDA, once no work waits for a row (a call's last wave, or every wave of a small call), the next window of
//! steps is launched before the current one is read back, so the GPU never waits on the host's read-back and graph
//! launch. With the fused kernels the samples are the same either way (the decode attention's arithmetic does not
//! depend on which rows share a step).

use std::collections::VecDeque;
use std::time::Instant;

use tch::Device;

use super::decode::{Decoder, DeviceState, TokenRead};
use super::prefill::{assign_rows, prefill, shared_prefix, SharedPrefix};
use super::progress::Progress;
use super::request::{
    FinishReason, GenerateOptions, Generated, GenerationRequest, GenerationStats, PromptOutput, PromptOverflow,
    SampleOutput,
};
use super::sampling::uniform;
use super::GenerateError;
use crate::model::CausalLm;

/// Finds a completed stop string: given all tokens of a sample and how many were checked before, returns the number
/// of tokens to keep and the stop string reached.
pub(crate) type StopCheck<'a> = dyn Fn(&[u32], usize) -> Result<Option<(usize, String)>, GenerateError> + 'a;

/// One busy cache row.
pub(crate) struct Row {
    pub(crate) prompt: usize,
    pub(crate) sample: usize,
    pub(crate) seed: u64,
    pub(crate) prompt_len: usize,
    /// Tokens already read back from the device.
    pub(crate) tokens: Vec<u32>,
    /// Tokens sampled on the device so far (read back or not).
    pub(crate) generated: usize,
    /// Position the row's latest token is fed at in the next decode step.
    pub(crate) pos: i64,
    /// Its first token was sampled by the latest prefill and sits in history column 0.
    pub(crate) fresh: bool,
}

/// `STASC_LAUNCH_AHEAD=0` reads every window back before the next is launched (the comparison for benchmarks).
static LAUNCH_AHEAD: crate::switch::Switch = crate::switch::Switch::new("STASC_LAUNCH_AHEAD", true);

/// Switches launching the next window of decode steps before the current one is read back (CUDA, when no work
/// waits for a row) on or off for the whole process; the default comes from `STASC_LAUNCH_AHEAD`.
pub fn set_launch_ahead(on: bool) {
    LAUNCH_AHEAD.set(on);
}

/// A window of decode steps launched on the device, its tokens on their way to the host.
struct Window {
    /// The rows it decodes for (all rows decode; these are the ones whose tokens it reads).
    rows: Vec<usize>,
    steps: i64,
    read: TokenRead,
}

/// What launching windows of decode steps needs, for the whole call.
struct Windows<'a> {
    model: &'a CausalLm,
    request: &'a GenerationRequest,
    options: &'a GenerateOptions,
    state: &'a mut DeviceState,
    decoder: &'a mut Decoder,
    prefix: Option<&'a SharedPrefix>,
    cache_len: i64,
    limit: usize,
    max_model_len: usize,
    /// Steps per window at most (`sync_every`).
    width: i64,
}

impl Windows<'_> {
    /// Tokens row `r` may still decode (max_tokens, model length) after what was launched for it.
    fn room(&self, busy: &[Option<Row>], r: usize) -> i64 {
        let row = busy[r].as_ref().expect("busy row");
        self.limit.min(self.max_model_len - row.prompt_len).saturating_sub(row.generated) as i64
    }

    /// Launches a window for `rows` (busy): as many steps as the window allows, stopping where one of them must
    /// end, so no row runs past its end unseen; then starts reading its tokens back.
    fn launch(
        &mut self,
        busy: &mut [Option<Row>],
        rows: Vec<usize>,
        stats: &mut GenerationStats,
    ) -> Result<Window, GenerateError> {
        let steps = rows.iter().map(|&r| self.room(busy, r)).min().unwrap_or(0).min(self.width);
        self.state.begin_window(window_uniforms(self.request, busy, steps), steps)?;
        for _ in 1..=steps {
            let attend_len = if self.options.batch_invariant {
                self.cache_len
            } else {
                rows.iter().map(|&r| busy[r].as_ref().map_or(0, |row| row.pos + 1)).max().unwrap_or(1)
            };
            let shared = self.prefix.map(|p| p.cache());
            self.decoder.step(
                self.model,
                self.state,
                &self.request.sampling,
                attend_len.min(self.cache_len),
                shared,
            )?;
            for &r in &rows {
                if let Some(row) = busy[r].as_mut() {
                    row.pos = (row.pos + 1).min(self.cache_len - 1);
                    row.generated += 1;
                }
            }
            stats.decode_steps += 1;
        }
        let read = self.state.start_read(steps)?;
        Ok(Window { rows, steps, read })
    }
}

/// Runs `request` on `model`. `stop_check` is required when the request has stop strings.
pub(crate) fn run(
    model: &CausalLm,
    request: &GenerationRequest,
    options: &GenerateOptions,
    stop_check: Option<&StopCheck<'_>>,
) -> Result<Generated<SampleOutput>, GenerateError> {
    let started = Instant::now();
    let _no_grad = tch::no_grad_guard();
    // A stream of this call's own on CUDA: generate calls on worker threads sharing a GPU stay apart.
    let _stream = match model.device() {
        Device::Cuda(i) => {
            crate::model::device::set_current_device(model.device());
            super::cuda_graph::OwnStream::enter(i)
        }
        _ => None,
    };
    let max_model_len =
        options.max_model_len.map_or(model.max_model_len() as usize, |m| m.min(model.max_model_len() as usize));
    let prompts = prepare_prompts(model, request, max_model_len)?;
    let _fused = if options.fuse_projections { Some(model.fuse_projections()?) } else { None };
    if !request.stop.stop_strings.is_empty() && stop_check.is_none() {
        return Err(GenerateError::InvalidRequest("stop strings need a tokenizer: use generate()".into()));
    }
    let mut outputs: Vec<PromptOutput<Option<SampleOutput>>> = prompts
        .iter()
        .zip(&request.prompts)
        .enumerate()
        .map(|(i, ((tokens, dropped), p))| PromptOutput {
            prompt_id: p.id,
            prompt_tokens: tokens.len(),
            truncated_tokens: *dropped,
            samples: vec![None; request.samples_of(i)],
        })
        .collect();
    let mut stats = GenerationStats::default();
    let total_samples: usize = (0..prompts.len()).map(|i| request.samples_of(i)).sum();
    if total_samples == 0 {
        return Ok(finish(outputs, stats, started));
    }
    let longest = prompts.iter().map(|(t, _)| t.len()).max().unwrap_or(1);
    // Batch-invariant shapes depend on the options only, never on the work.
    let (cache_len, work) = if options.batch_invariant {
        (max_model_len as i64, None)
    } else {
        (max_model_len.min(longest + request.max_tokens) as i64, Some(total_samples))
    };
    let rows = batch_rows(model, options, work, cache_len);
    stats.rows = rows as usize;
    let window = options.sync_every.max(1) as i64;
    let mut state = DeviceState::new(model, rows, cache_len, window, request.sampling.is_random())?;
    // Batch-invariant runs prefill each prompt alone: a prefix found across the call's prompts would make a
    // sample's arithmetic depend on what else is in the call.
    let prefix = match (options.shared_prefix_min_tokens, options.batch_invariant) {
        (Some(min_len), false) => shared_prefix(model, &prompts, min_len)?,
        _ => None,
    };
    if let Some(p) = &prefix {
        stats.prefill_tokens += p.len();
        stats.shared_prefix_tokens = p.len();
    }
    let mut decoder = Decoder::new(model, options);
    let mut busy: Vec<Option<Row>> = (0..rows).map(|_| None).collect();
    let mut pending: VecDeque<(usize, usize)> = (0..prompts.len()).map(|p| (p, 0)).collect();
    let progress = Progress::new(options.progress, total_samples as u64);
    let limit = request.max_tokens.min(max_model_len.saturating_sub(1)).max(1);
    let launch_ahead = model.device().is_cuda() && LAUNCH_AHEAD.get();
    let mut windows = Windows {
        model,
        request,
        options,
        state: &mut state,
        decoder: &mut decoder,
        prefix: prefix.as_ref(),
        cache_len,
        limit,
        max_model_len,
        width: window,
    };
    loop {
        let started = assign_rows(&mut busy, &mut pending, request, &prompts, &outputs);
        if !started.is_empty() {
            let count =
                prefill(model, windows.state, &started, &mut busy, &prompts, request, options, prefix.as_ref())?;
            stats.prefill_tokens += count.run;
            stats.prefill_tokens_reused += count.reused;
        }
        let active: Vec<usize> = (0..busy.len()).filter(|&r| busy[r].is_some()).collect();
        if active.is_empty() {
            break;
        }
        let mut current = windows.launch(&mut busy, active, &mut stats)?;
        loop {
            // While no work waits for a row, the next window goes out before this one is read: the GPU does not
            // idle through the host's read-back, bookkeeping and graph launch. Rows that finish in `current`
            // decode one window more, their tokens dropped (as rows finishing mid-window already do); rows that
            // end with `current` for certain (max_tokens, model length) are left out.
            let next = if launch_ahead && pending.is_empty() {
                let rows: Vec<usize> = (current.rows.iter().copied())
                    .filter(|&r| busy[r].is_some() && windows.room(&busy, r) > 0)
                    .collect();
                if rows.is_empty() {
                    None
                } else {
                    stats.windows_ahead += 1;
                    Some(windows.launch(&mut busy, rows, &mut stats)?)
                }
            } else {
                None
            };
            let wait = Instant::now();
            let history = current.read.finish()?;
            stats.host_wait_s += wait.elapsed().as_secs_f64();
            let width = (current.steps + 1) as usize;
            for &r in &current.rows {
                // Rows that finished in the window before (this one was launched ahead) are gone.
                let Some(row) = busy[r].as_mut() else { continue };
                let first = if row.fresh { 0 } else { 1 };
                let new: Vec<u32> = history[r * width + first..(r + 1) * width].iter().map(|&t| t as u32).collect();
                row.fresh = false;
                if let Some(reason) = absorb(row, &new, request, max_model_len, stop_check)? {
                    let row = busy[r].take().expect("active row");
                    stats.generated_tokens += row.tokens.len();
                    progress.sample_done(row.tokens.len());
                    outputs[row.prompt].samples[row.sample] =
                        Some(SampleOutput { token_ids: row.tokens, finish_reason: reason, seed: row.seed });
                }
            }
            match next {
                Some(next) => current = next,
                None => break,
            }
        }
    }
    progress.finish();
    stats.cuda_graphs = decoder.graphs();
    stats.capture_s = decoder.capture_s;
    stats.cuda_graph_note = decoder.graph_note.take();
    Ok(finish(outputs, stats, started))
}

fn finish(
    outputs: Vec<PromptOutput<Option<SampleOutput>>>,
    mut stats: GenerationStats,
    started: Instant,
) -> Generated<SampleOutput> {
    stats.elapsed_s = started.elapsed().as_secs_f64();
    let prompts = outputs
        .into_iter()
        .map(|p| PromptOutput {
            prompt_id: p.prompt_id,
            prompt_tokens: p.prompt_tokens,
            truncated_tokens: p.truncated_tokens,
            samples: p.samples.into_iter().map(|s| s.expect("every sample finishes")).collect(),
        })
        .collect();
    Generated { prompts, stats }
}

/// Validates the request and applies the overflow rule; returns each prompt's tokens and how many were dropped.
fn prepare_prompts(
    model: &CausalLm,
    request: &GenerationRequest,
    max_model_len: usize,
) -> Result<Vec<(Vec<u32>, usize)>, GenerateError> {
    let invalid = |m: String| Err(GenerateError::InvalidRequest(m));
    match &request.n_per_prompt {
        None if request.n == 0 => return invalid("n (samples per prompt) must be at least 1".into()),
        Some(v) if v.len() != request.prompts.len() => {
            return invalid(format!("n_per_prompt has {} counts for {} prompts", v.len(), request.prompts.len()))
        }
        Some(v) => {
            if let Some(i) = v.iter().position(|&n| n == 0) {
                return invalid(format!("prompt {} asks for 0 samples: each needs at least 1", request.prompts[i].id));
            }
        }
        None => {}
    }
    if request.max_tokens == 0 {
        return invalid("max_tokens must be at least 1".into());
    }
    if max_model_len < 2 {
        return invalid(format!("max_model_len {max_model_len} leaves no room for a prompt and a token"));
    }
    let vocab = model.config().vocab_size as u32;
    let mut prepared = Vec::with_capacity(request.prompts.len());
    for prompt in &request.prompts {
        if prompt.token_ids.is_empty() {
            return invalid(format!("prompt {} has no tokens", prompt.id));
        }
        if let Some(bad) = prompt.token_ids.iter().find(|&&t| t >= vocab) {
            return invalid(format!("prompt {} holds token id {bad}, outside the vocabulary of {vocab}", prompt.id));
        }
        let room = max_model_len - 1;
        let len = prompt.token_ids.len();
        if len <= room {
            prepared.push((prompt.token_ids.clone(), 0));
        } else if request.prompt_overflow == PromptOverflow::TruncateLeft {
            prepared.push((prompt.token_ids[len - room..].to_vec(), len - room));
        } else {
            return Err(GenerateError::PromptTooLong { prompt_id: prompt.id, tokens: len, max_model_len });
        }
    }
    Ok(prepared)
}

/// Cache rows: the batch limit, the work available (when given) and the memory for the cache, whichever is
/// smallest. The memory is the model's reserved KV pool when it has one (the cache is then a view of it), otherwise
/// the cache byte limit of the options.
fn batch_rows(model: &CausalLm, options: &GenerateOptions, total_samples: Option<usize>, cache_len: i64) -> i64 {
    let by_memory = match model.kv_pool_positions() {
        Some(positions) => positions / cache_len.max(1),
        None => options.max_cache_bytes / (model.kv_bytes_per_position() * cache_len).max(1),
    }
    .max(1);
    let limit = (options.max_batch.max(1) as i64).min(by_memory);
    total_samples.map_or(limit, |work| wave_rows(limit, work.min(i64::MAX as usize) as i64))
}

/// Rows for `work` samples under a row limit: as few as the same number of waves needs. 640 samples under a limit
/// of 256 take three waves either way, and three of 214 rows are cheaper steps than three of 256 with the last
/// wave half empty.
fn wave_rows(limit: i64, work: i64) -> i64 {
    let (limit, work) = (limit.max(1), work.max(1));
    let waves = (work + limit - 1) / limit;
    (work + waves - 1) / waves
}

/// The uniforms of the next `steps` decode steps ([rows * steps] row-major), or `None` when greedy. Column j of a
/// row is the draw for its token number `generated + j`.
fn window_uniforms(request: &GenerationRequest, busy: &[Option<Row>], steps: i64) -> Option<Vec<f32>> {
    if !request.sampling.is_random() || steps == 0 {
        return None;
    }
    let mut u = Vec::with_capacity(busy.len() * steps as usize);
    for slot in busy {
        for j in 0..steps as u64 {
            u.push(slot.as_ref().map_or(0.5, |row| uniform(row.seed, row.generated as u64 + j)));
        }
    }
    Some(u)
}

/// Appends a row's newly read tokens, applying the stop rules in order; returns why it finished, if it did.
fn absorb(
    row: &mut Row,
    new: &[u32],
    request: &GenerationRequest,
    max_model_len: usize,
    stop_check: Option<&StopCheck<'_>>,
) -> Result<Option<FinishReason>, GenerateError> {
    let checked = row.tokens.len();
    let mut reason = None;
    for &token in new {
        row.tokens.push(token);
        if !request.stop.ignore_eos && request.stop.eos_token_ids.contains(&token) {
            reason = Some(FinishReason::Eos);
        } else if row.tokens.len() >= request.max_tokens {
            reason = Some(FinishReason::MaxTokens);
        } else if row.prompt_len + row.tokens.len() >= max_model_len {
            reason = Some(FinishReason::MaxModelLen);
        }
        if reason.is_some() {
            break;
        }
    }
    if let (Some(check), false) = (stop_check, request.stop.stop_strings.is_empty()) {
        if let Some((keep, stop)) = check(&row.tokens, checked)? {
            row.tokens.truncate(keep);
            reason = Some(FinishReason::StopString(stop));
        }
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::wave_rows;

    #[test]
    fn rows_fill_every_wave_evenly() {
        assert_eq!(wave_rows(256, 640), 214);
        assert_eq!(wave_rows(512, 640), 320);
        assert_eq!(wave_rows(512, 320), 320);
        assert_eq!(wave_rows(256, 128), 128);
        assert_eq!(wave_rows(2, 10), 2);
        assert_eq!(wave_rows(4, 9), 3);
        assert_eq!(wave_rows(4, 0), 1);
    }
}
