"""Beyond the handout, each off by default: more LR schedules, and (as they land) other objectives,
mixture-of-experts and the leaderboard techniques. The handout's pieces stay as they are."""
