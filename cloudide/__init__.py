"""CloudIDE Terminals tooling: operator CLI, local stack, ECS Exec transport and browser gateway."""
