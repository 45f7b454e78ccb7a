"""``--user-dir $(svae-user-dir translation_moe)``: fairseq's mixture-of-experts translation task
(``--task translation_moe``, Shen et al. 2019, installed with fairseq under
``fairseq/examples/translation_moe``) with this plugin's safe checkpoint loading, so that
fairseq-generate reads a translation_moe checkpoint and fairseq-train resumes one under
torch >= 2.6 with torch's weights-only protection on.

fairseq imports a ``--user-dir`` as a top-level module named after its directory; this one is
named so that it cannot be taken for fairseq's own ``translation_moe_src`` (importing that too,
under a second name, would register the task twice).
"""

import fairseq_svae  # noqa: F401  (safe checkpoint loading; the plugin's errors and checks)
import fairseq.examples.translation_moe.translation_moe_src  # noqa: F401  (registers translation_moe)
