"""The reference control plane's domain: nodes, replicas and commands, decided purely.

- :mod:`.node`: a node's status, a transition table and a pure ``step``.
- :mod:`.records`: the records kept and stored, and what the fleet hands out
  (messages to send, replicas moved).
- :mod:`.inventory`: the records, indexed by node, with what changed.
- :mod:`.commands`: the ledger of commands not answered yet.
- :mod:`.placement`: which node may take a replica, and which one does.
- :mod:`.fleet`: :class:`~.fleet.Fleet`, every decision, built on the above.

Rules:

- Only ``online`` nodes with enough free assignable GPUs receive deploys.
- A replica holds ``gpu_count`` GPUs of its node while ``pending``,
  ``running`` or ``stopping``; ``exited``, ``failed`` and ``stopped`` free them.
- A node out of contact for ``offline_after`` seconds since its last frame
  (:class:`~vectorlay.domain.liveness.LivenessPolicy`) loses its
  ``pending``/``running`` replicas to other online nodes (same replica id);
  with no room a replica waits, unplaced, until a node can take it.  When the
  old node comes back still running one that was placed elsewhere, it is
  sent a ``stop``; one still waiting stays where it runs (no stop, no
  deploy) if that node could take it as a deploy, and is stopped there
  otherwise.
- Commands not yet answered (one per node and replica: a later one replaces
  an earlier one) are re-sent when the node's session resumes; an answer
  clears only a command of its own kind.  A ``failed`` stop answers nothing:
  the container may still run, so the replica stays ``stopping`` (GPUs held,
  the agent's error kept) and the stop is sent again on the next session.
- ``system_info`` lists every replica the node manages.  A ``pending`` or
  ``running`` replica of the node missing from it, with no deploy still
  unanswered, is gone: it becomes ``failed`` ("not reported by node") and
  frees its GPUs.  Heartbeats list replicas too but are not used this way:
  the agent builds one while its deploys run, so it can trail the answers
  that follow it.
- A draining node becomes ``maintenance`` once no replica holds it.

Nothing here imports the agent's domain: what both programs need (wire
messages, readiness, assignable GPUs, liveness, close codes) lives in the
shared modules at the top of :mod:`vectorlay.domain`.
"""
