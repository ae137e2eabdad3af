"""The call pipeline: frames, processors, runner, clock."""
