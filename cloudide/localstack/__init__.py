"""The local stack: the real template, workflow and handlers on moto, with sandboxed processes as tasks."""
