"""The training state, optimizer, loss and the jitted init / train / eval steps, apart from data,
checkpoints and logging.

The training loop runs `JittedSteps.program`s, compiled ahead of time: `train_resident` (K steps
in one `lax.scan`, each gathering its batch by index from the split resident on the devices,
`fasca_jax.indexing`), `train_chunk` (K steps over K stacked batches from the host) and
`evaluate_resident` (a whole resident split). Dropout keys are fold_in(seed, step) and the batch
of a step depends on (seed, step) only, so K does not change the result. Their `_seeds` twins
run the seeds of a sweep stacked on a leading axis, all in one program (`fasca_jax.seed_group`).

Imports only JAX, Flax (through the model), Optax and NumPy, so `benchmarks/train_step.py` times
exactly the step `train_lib` runs, also on machines without grain, TFDS or Orbax.

`config` is the run config (configs/default.py); the fields read here are `modalities`, `dims`,
`max_len`, `task`, `num_classes`, `target_key`, `aux_loss_weight`, `modality_dropout`, `model.*`
and `optimizer.*` (the seed is in the state).
"""

import math
import time
from typing import Any

from absl import logging
import flax.struct
import jax
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax

from fasca_jax import distributed
from fasca_jax import indexing
from fasca_jax import perturbations
from fasca_jax import tasks
from fasca_jax.models import fasca_net
from fasca_jax.models import text_encoder


class TrainState(flax.struct.PyTreeNode):
  """Everything a resumed run needs besides the data position."""

  step: jax.Array
  seed: jax.Array  # int32 config.seed, as data: one compiled step serves every seed of a sweep.
  params: Any
  opt_state: Any
  nonfinite_count: jax.Array  # updates skipped because the loss was not finite.
  first_nonfinite_step: jax.Array  # step of the first such update, -1 if none.


def make_optimizer(config, total_steps: int, steps_per_epoch: int):
  """AdamW with linear warm-up, cosine decay and global-norm clipping -> (tx, schedule)."""
  o = config.optimizer
  warmup = min(int(o.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=o.lr,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=o.lr * o.min_lr_ratio,
  )
  return optimizer(config, schedule), schedule


def optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW following `schedule`.

  With a text encoder in the model (`text_encoder.enabled`), its parameters form their own
  groups (`optax.multi_transform` over `text_encoder.param_labels`), as MMSA's BERT models
  (Self-MM's `learning_rate_bert` / `weight_decay_bert`) do: AdamW at
  `optimizer.text_encoder_lr` (the same warm-up + cosine shape as `schedule`, scaled), weight
  decay `optimizer.text_encoder_weight_decay` on all but biases and LayerNorm scales; with
  `optimizer.text_encoder_frozen_layers` = k > 0 the embeddings and the k lowest layers (all of
  the encoder when k >= its layer count, MMSA's `use_finetune=False`) get no update, and their
  gradients are zeroed before clipping, as PyTorch's `requires_grad=False` leaves them out of
  `clip_grad_norm_`.

  The state's structure does not depend on the schedule, so any schedule (e.g.
  `optax.constant_schedule`) gives the shapes of a training run's optimizer state.
  """
  o = config.optimizer
  clip = optax.clip_by_global_norm(o.grad_clip_norm)
  main = optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  if not text_encoder.enabled(config):
    return optax.chain(clip, main)
  if o.lr <= 0:
    raise ValueError(f"config.optimizer.lr={o.lr}: the text encoder's rate is scaled from it.")
  ratio = o.text_encoder_lr / o.lr
  labels = lambda params: text_encoder.param_labels(params, o.text_encoder_frozen_layers)
  frozen = lambda params: jax.tree.map(lambda label: label == 'frozen', labels(params))
  encoder = optax.adamw(
    lambda step: schedule(step) * ratio,
    b1=o.b1,
    b2=o.b2,
    weight_decay=o.text_encoder_weight_decay,
    mask=text_encoder.decay_mask,
  )
  return optax.chain(
    optax.masked(optax.set_to_zero(), frozen),
    clip,
    optax.multi_transform(
      {'other': main, 'encoder': encoder, 'frozen': optax.set_to_zero()}, labels
    ),
  )


def model_inputs(config, batch):
  """batch -> (inputs, masks): modality -> (B, T_m, D_m) and modality -> (B, T_m) bool.

  With a text encoder, inputs['text'] is batch['text_ids'] (B, T_t) int32 and
  inputs['text_segments'] batch['text_segments'].
  """
  tokens = text_encoder.enabled(config)
  inputs = {m: batch[m] for m in config.modalities if not (tokens and m == 'text')}
  if tokens:
    inputs['text'], inputs['text_segments'] = batch['text_ids'], batch['text_segments']
  return inputs, {m: batch[f'{m}_mask'] for m in config.modalities}


def dummy_batch(config, batch_size: int):
  """Zero inputs with the configured shapes, for initialisation."""
  inputs = {
    m: np.zeros((batch_size, config.max_len[m], config.dims[m]), np.float32)
    for m in config.modalities
  }
  if text_encoder.enabled(config):
    inputs['text'] = np.zeros((batch_size, config.max_len.text), np.int32)
  return inputs, {m: np.ones((batch_size, config.max_len[m]), bool) for m in config.modalities}


def init_state(model, tx, config, seed) -> TrainState:
  """Float32 parameters of `model` and the optimizer state, at step 0.  seed: () int32."""
  inputs, masks = dummy_batch(config, 2)
  rng = jax.random.fold_in(jax.random.key(seed), 0)
  params = model.init({'params': rng}, inputs, masks, train=False)['params']
  return TrainState(
    step=np.int32(0),
    seed=seed,
    params=params,
    opt_state=tx.init(params),
    nonfinite_count=np.int32(0),
    first_nonfinite_step=np.int32(-1),
  )


def masked_mean(values, weights):
  """Mean of (B,) values over examples with weight 1 (padding examples have weight 0)."""
  weights = weights.astype(jnp.float32)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def loss_fn(model, task: tasks.Task, config, params, batch, rng, train: bool):
  """Masked mean task loss (+ weighted aux-head losses) -> (loss, (main output, per-example)).

  The loss is float32 whatever `model.dtype` computes in (the head casts its output).
  """
  inputs, masks = model_inputs(config, batch)
  outputs, _ = model.apply(
    {'params': params}, inputs, masks, train=train, rngs={'dropout': rng} if train else {}
  )
  target, valid = batch[config.target_key], batch['valid']
  per_example = task.per_example_loss(outputs['main'], target)
  loss = masked_mean(per_example, valid)
  aux = [
    masked_mean(task.per_example_loss(y, target), valid)
    for k, y in outputs.items()
    if k.startswith('aux_')
  ]
  if aux and config.aux_loss_weight:
    loss = loss + config.aux_loss_weight * sum(aux) / len(aux)
  return loss, (outputs['main'], per_example)


def train_step(model, task: tasks.Task, tx, schedule, config, state: TrainState, batch):
  """One AdamW step; a non-finite loss or gradient leaves the state unchanged and is counted.

  The guard is a select (`jnp.where`) rather than `optax.apply_if_finite`, whose `lax.cond`
  becomes an XLA conditional: on GPU that reads its predicate back on the host every step, a
  device-to-host round trip this launch-bound step should not pay; the select costs one
  elementwise pass over parameters and optimizer state, and also checks the loss.

  With `config.modality_dropout` on, each example loses each modality m with probability
  modality_dropout[m] before the forward pass (`perturbations.drop_modalities`), drawn from the
  same `fold_in(seed, step)` key as dropout (split in two); off, the step is unchanged.

  Returns the new state and {'loss', 'grad_norm', 'lr'} scalars.
  """
  rng = jax.random.fold_in(jax.random.key(state.seed), state.step)
  rates = perturbations.dropout_rates(config)
  if rates:
    rng, modality_rng = jax.random.split(rng)
    batch = perturbations.drop_modalities(batch, rates, modality_rng)
  (loss, _), grads = jax.value_and_grad(
    lambda p: loss_fn(model, task, config, p, batch, rng, True), has_aux=True
  )(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = TrainState(
    step=state.step + 1,
    seed=state.seed,
    params=keep(params, state.params),
    opt_state=keep(opt_state, state.opt_state),
    nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
    first_nonfinite_step=jnp.where(
      (state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step
    ),
  )
  return new_state, {'loss': loss, 'grad_norm': grad_norm, 'lr': schedule(state.step)}


def eval_step(model, task: tasks.Task, config, params, batch) -> dict:
  """Per-example host outputs of one batch: {'output', 'loss', 'target', 'valid', 'index'}."""
  _, (y, per_example) = loss_fn(model, task, config, params, batch, None, False)
  return {
    'output': task.host_output(y),
    'loss': per_example,
    'target': batch[config.target_key],
    'valid': batch['valid'],
    'index': batch['index'],
  }


def _unstack(tree) -> list:
  """A pytree with a leading axis of S on every leaf -> S pytrees."""
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(jax.tree.leaves(tree)[0].shape[0])]


def call_lengths(start: int, total: int, *, steps_per_call: int, every: tuple[int, ...]):
  """Steps per call of the train program from step `start` to `total`: `steps_per_call` where
  K steps fit before the next multiple of any of `every` (log and epoch ends), single steps up to
  it otherwise, so that calls end on those steps and only two programs (K and 1) exist."""
  lengths, step = [], start
  while step < total:
    stop = min([total] + [(step // e + 1) * e for e in every if e > 0])
    k = steps_per_call if step + steps_per_call <= stop else 1
    lengths.append(k)
    step += k
  return lengths


class JittedSteps:
  """The jitted init, train and eval steps of one config on the `data` mesh.

  Data parallel over every device of every process: the batch is sharded on its first axis,
  parameters and optimizer state are replicated, the train steps donate their state. `train`
  and `evaluate` (one batch each) compile on first use; `program(name, *args)` compiles the
  loop's programs ahead of time (logging the seconds) and keeps them, once per config and
  argument shapes: the seeds of a sweep share one `JittedSteps`. `optimizer` ((tx, schedule)
  from `make_optimizer`) is needed by `init` and the train steps only.
  """

  def __init__(
    self,
    config,
    optimizer: tuple[optax.GradientTransformation, Any] | None = None,
  ):
    self.config = config
    self.model = fasca_net.build(config)
    self.task = tasks.from_config(config)
    perturbations.dropout_rates(config)  # a bad config.modality_dropout fails here, not mid-trace.
    self.tx, self.schedule = optimizer or (None, None)
    self.mesh = distributed.make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P('data'))
    self.train = jax.jit(
      self._train,
      in_shardings=(self.replicated, self.data_sharding),
      out_shardings=(self.replicated, self.replicated),
      donate_argnums=(0,),
    )
    self.evaluate = jax.jit(
      self._evaluate,
      in_shardings=(self.replicated, self.data_sharding),
      out_shardings=self.replicated,
    )
    self._init = jax.jit(self._init_state, out_shardings=self.replicated)
    chunk = NamedSharding(self.mesh, P(None, 'data'))
    self._programs = {
      'init': self._init,
      'train_resident': jax.jit(
        self._train_resident,
        static_argnums=(2,),  # num_steps
        in_shardings=(self.replicated, self.replicated),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,),
      ),
      'train_chunk': jax.jit(
        self._train_chunk,
        in_shardings=(self.replicated, chunk),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,),
      ),
      'evaluate': self.evaluate,
      'evaluate_resident': jax.jit(
        self._evaluate_resident,
        static_argnums=(2,),  # batch_size
        in_shardings=(self.replicated, self.replicated),
        out_shardings=self.replicated,
      ),
      # The same programs over a leading seed axis of the state (`fasca_jax.seed_group`): the
      # seed axis replicated, the batch axis sharded over `data` as above.
      'train_resident_seeds': jax.jit(
        self._train_resident_seeds,
        static_argnums=(2,),  # num_steps
        in_shardings=(self.replicated, self.replicated),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,),
      ),
      'train_chunk_seeds': jax.jit(
        jax.vmap(self._train_chunk),
        in_shardings=(self.replicated, NamedSharding(self.mesh, P(None, None, 'data'))),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,),
      ),
      'evaluate_seeds': jax.jit(
        jax.vmap(self._evaluate, in_axes=(0, None), out_axes=1),
        in_shardings=(self.replicated, self.data_sharding),
        out_shardings=self.replicated,
      ),
      'evaluate_resident_seeds': jax.jit(
        self._evaluate_resident_seeds,
        static_argnums=(2,),  # batch_size
        in_shardings=(self.replicated, self.replicated),
        out_shardings=self.replicated,
      ),
      'stack': jax.jit(
        lambda *states: jax.tree.map(lambda *x: jnp.stack(x), *states),
        out_shardings=self.replicated,
      ),
      'unstack': jax.jit(_unstack, out_shardings=self.replicated),
    }
    self._compiled = {}

  def init(self, seed: int) -> TrainState:
    """Fresh state for `seed`; compiled once for all seeds. A text encoder starts from its
    pretrained weights (`text_encoder.with_pretrained`; AdamW's initial state does not depend
    on the parameter values)."""
    state = self.program('init', np.int32(seed))(np.int32(seed))
    if text_encoder.enabled(self.config):
      state = state.replace(
        params=text_encoder.with_pretrained(state.params, self.config.model.text_encoder)
      )
    return state

  def abstract_state(self) -> TrainState:
    """The train state's shapes, dtypes and (replicated) shardings, read from the compiled init
    program (which the run needs anyway): what a restore needs, without tracing the model again
    as `checkpoints.abstract_state` does."""
    return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated),
      self.program('init', np.int32(0)).out_info,
    )

  def stack(self, states):
    """S states (or parameters) of the seeds of a group -> one with a leading axis of S,
    replicated on the mesh."""
    return self.program('stack', *states)(*states)

  def unstack(self, state) -> list:
    """A state (or parameters) stacked over S seeds -> the S states, in order."""
    return self.program('unstack', state)(state)

  def program(self, name: str, *args, **static) -> jax.stages.Compiled:
    """The compiled program `name` for arguments shaped like `args` (arrays or
    `jax.ShapeDtypeStruct`s; `static`: num_steps, batch_size), compiled on first request.

    Programs: 'init' (seed), 'train_resident' (state, split arrays; num_steps), 'train_chunk'
    (state, (K, B, ...) batches), 'evaluate' (params, batch), 'evaluate_resident' (params,
    split arrays; batch_size). Their `_seeds` twins take a state stacked over seeds (`stack`,
    a leading axis of S) and run every seed in one program (`jax.vmap`):
    'train_resident_seeds' (metrics (S, K) each), 'train_chunk_seeds' (state, (S, K, B, ...)
    batches, each seed its own), 'evaluate_seeds' and 'evaluate_resident_seeds' (stacked
    params; per-example outputs (B or N, S, ...): the seed axis second, so that the rows stay
    first). 'stack' (S states) -> their stacked state; 'unstack' the reverse.
    """
    leaves, tree = jax.tree.flatten(args)
    key = (
      name,
      tuple(sorted(static.items())),
      str(tree),
      tuple((x.shape, str(x.dtype), str(getattr(x, 'sharding', None))) for x in leaves),
    )
    if key not in self._compiled:
      t = time.perf_counter()
      compiled = self._programs[name].lower(*args, *static.values()).compile()
      logging.info(
        'Compiled %s%s in %.1f s (or loaded from the persistent compilation cache).',
        name,
        ''.join(f' {k}={v}' for k, v in static.items()),
        time.perf_counter() - t,
      )
      self._compiled[key] = compiled
    return self._compiled[key]

  def loss(self, params, batch) -> jax.Array:
    """The evaluation loss (no dropout) of `params` on one device batch."""
    return loss_fn(self.model, self.task, self.config, params, batch, None, False)[0]

  def _optimizer(self):
    if self.tx is None:
      raise ValueError('JittedSteps built without an optimizer can only evaluate.')
    return self.tx, self.schedule

  def _init_state(self, seed):
    return init_state(self.model, self._optimizer()[0], self.config, seed)

  def _train(self, state: TrainState, batch):
    tx, schedule = self._optimizer()
    return train_step(self.model, self.task, tx, schedule, self.config, state, batch)

  def _train_resident(self, state: TrainState, arrays: dict, num_steps: int):
    """`num_steps` steps, each on its batch gathered from the resident split `arrays`
    (`indexing.batch_indices` of the state's seed and step). Metrics: (num_steps,) each."""
    num_examples = arrays[self.config.target_key].shape[0]

    def one(state, _):
      indices = indexing.batch_indices(
        state.seed,
        state.step,
        num_examples=num_examples,
        global_batch_size=self.config.batch_size,
      )
      indices = jax.lax.with_sharding_constraint(indices, self.data_sharding)
      batch = jax.lax.with_sharding_constraint(indexing.take(arrays, indices), self.data_sharding)
      return self._train(state, batch)

    return lax.scan(one, state, length=num_steps)

  def _train_resident_seeds(self, state: TrainState, arrays: dict, num_steps: int):
    """`_train_resident` of each seed of the stacked `state` (S, ...): each gathers its own
    batches (its seed's order) from the one resident split. Metrics: (S, num_steps) each."""
    return jax.vmap(lambda s: self._train_resident(s, arrays, num_steps))(state)

  def _evaluate_resident_seeds(self, params, arrays: dict, batch_size: int) -> dict:
    """`_evaluate_resident` of each seed of the stacked `params`: (rows, S, ...)."""
    return jax.vmap(lambda p: self._evaluate_resident(p, arrays, batch_size), out_axes=1)(params)

  def _train_chunk(self, state: TrainState, batches: dict):
    """One step per leading entry of `batches` (K, B, ...). Metrics: (K,) each."""
    return lax.scan(self._train, state, batches)

  def _evaluate(self, params, batch):
    return eval_step(self.model, self.task, self.config, params, batch)

  def _evaluate_resident(self, params, arrays: dict, batch_size: int) -> dict:
    """`eval_step` over the whole resident split in batches of `batch_size`, the last one
    padded: per-example outputs (ceil(N / batch_size) * batch_size, ...), padding rows
    `valid` False."""
    num_examples = arrays[self.config.target_key].shape[0]
    num_batches = math.ceil(num_examples / batch_size)

    def one(_, b):
      indices = b * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
      valid = indices < num_examples
      indices, valid = (
        jax.lax.with_sharding_constraint(x, self.data_sharding)
        for x in (jnp.where(valid, indices, 0), valid)
      )
      batch = indexing.take(arrays, indices, valid)
      return None, self._evaluate(
        params, jax.lax.with_sharding_constraint(batch, self.data_sharding)
      )

    _, out = lax.scan(one, None, jnp.arange(num_batches))
    return jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), out)
