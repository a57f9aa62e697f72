-- A live backtest's watchers, across replicas: each replica with a client
-- watching the run pushes this forward; a run is cancelled for want of
-- watchers only once no replica has pushed it for a while.
ALTER TABLE backtest_runs ADD COLUMN watched_until TIMESTAMPTZ;
