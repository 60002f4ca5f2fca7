"""A hook on the train programs the training loop runs, for tests that change or stop a run at
a given step (the loop calls `JittedSteps.program`, not `JittedSteps.train`)."""


def after_train_calls(jitted, after):
  """Makes every train program of `jitted` return `after(state)` instead of its state.

  after: TrainState -> TrainState, called once per call (`config.steps_per_call` steps).
  """
  program = jitted.program

  def hooked(name, *args, **static):
    compiled = program(name, *args, **static)
    if not name.startswith('train'):
      return compiled

    def train(state, data):
      state, step_metrics = compiled(state, data)
      return after(state), step_metrics

    return train

  jitted.program = hooked
