"""Operations: the coe CLI, local runs, status, preflight, rendering, the dashboard and configs."""
