"""Multi-process serving: ``gateway serve --workers N``.

One supervisor process (:mod:`.supervisor`) and N worker processes (:mod:`.worker`), each a
whole :class:`gateway.app.GatewayServer` (its own models, onnxruntime sessions, event loop and
telemetry) listening on the same gRPC port with ``SO_REUSEPORT``: Linux hashes each new
connection to one of the listening workers, so a client's calls on one connection stay on one
worker and many connections spread over all of them.

- **Private endpoints.** The supervisor owns a run directory (``mkdtemp``, mode 0700; removed at
  exit, or by the next supervisor's start when this one was SIGKILLed) holding
  the workers' settings (``settings.json``), the restart counts (``state.json``) and one unix
  socket per worker (``w<i>.sock``, :mod:`.channel`): HTTP with ``/metrics`` (the worker's
  Prometheus text), ``/readyz`` and ``/share?window_s=`` (its GetStats share in mergeable form,
  :mod:`.codec`). Nothing of it is on the network.
- **One GetStats.** The worker a ``GetStats`` call lands on asks the others for their shares
  and merges (:func:`gateway.telemetry.readers.summarize_parts`): counts, rates, the running
  totals (which OIP ``ModelStatistics`` reports) and the tallies of refused requests add;
  window histograms are base-2 exponential ones, merged at a common scale by adding bucket
  counts, so the percentiles are exactly those of one histogram of every worker's requests. Drift, online quality (delayed labels are joined only by the
  worker that answered the request), shadow pairs and the top input shifts are the answering
  worker's own; alert rules and automatic rollbacks judge each worker's own share (a rollback
  sets that worker's weights).
- **One /metrics.** The supervisor serves the admin HTTP port: ``/metrics`` gathers the
  workers' texts and merges them (:mod:`.promtext`): counters and histograms (fixed bucket
  bounds) add, gauges are kept per worker with a ``worker`` label, plus the supervisor's own
  ``gateway_workers`` and ``gateway_worker_restarts_total``. ``/readyz`` is 200 only when every
  worker is ready. Over OTLP each worker exports itself, told apart by its resource's
  ``service.instance.id`` (a UUID per process) and ``gateway.worker.index``.
- **Restarts.** A worker that exits while the server is not stopping is started again after a
  backoff (0.5 s, doubling to 30 s while it keeps dying within 30 s of its start) and counted.
  Its counts die with it: the merged counters drop back (a counter reset to Prometheus). A
  worker opens the port only once its models are loaded (a single-process server opens it
  first and says NOT_SERVING meanwhile), so while one restarts the kernel hands new
  connections to the others.
- **Admin calls.** A ``gateway.v1.Admin`` traffic change made on one worker is POSTed to the
  others' private sockets (``/traffic``: the resulting weights and shadows; ``/reload``), which
  apply it on their event loops; the admin token reaches the workers in their environment
  (``GATEWAY_WORKER_ADMIN_TOKEN``, removed at once), never in the run directory. OIP repository
  load/unload act on the worker they land on: with several, change the repository and send
  SIGHUP, which every worker gets.
- **Stopping.** SIGTERM/SIGINT go to every worker, each drains as a single-process server does
  (``grace_period_s``); the supervisor exits when all have, 0 if all exited 0. SIGHUP is
  forwarded (rescan the repository). A worker whose supervisor dies gets SIGTERM (Linux
  ``PR_SET_PDEATHSIG``).

Memory: N times one server's (each worker loads every model and keeps its own telemetry),
plus the supervisor (no models). A GetStats or a scrape holds one share per worker at a time:
three window histograms of at most ``histogram_max_buckets`` counts per version (under 4 KB
at 160 buckets), or one worker's exposition text.
"""
