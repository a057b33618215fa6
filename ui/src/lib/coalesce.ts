/**
 * `task` run at most once at a time: a call while it runs asks for one more run after it, and
 * any number of such calls make one. Many reasons to re-read can arrive at once (the monitor's
 * first state of each of 100 hosts); each would otherwise read everything again.
 */
export function coalesced(task: () => Promise<void>): () => void {
  let running = false;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    void (async () => {
      try {
        do {
          again = false;
          await task();
        } while (again);
      } finally {
        running = false;
      }
    })();
  };
}
