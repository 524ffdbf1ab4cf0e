"""The negative control for randomness at import: this module reads randomness at module scope.

Imported before the first request it must fail with workerd's error (import_checks.py); imported
in a request the same line must work. Test code, never copied into the Worker.
"""

import uuid

TOKEN = uuid.uuid4()
