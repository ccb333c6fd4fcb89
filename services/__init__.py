"""The fleet's services.

Importing ``feast`` sets ``PROMETHEUS_MULTIPROC_DIR`` and, if ``prometheus_client`` has not
been imported yet, switches every metric of the process into multiprocess mode (values in
shared files, counters of the same name merged across app-owned registries). Importing
``prometheus_client`` here, before any service module can import Feast, keeps each
process's metrics in memory, as every service expects.
"""

import prometheus_client  # noqa: F401  (import order matters, see above)
