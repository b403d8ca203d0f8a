/**
 * Waits for `work` or until `deadline` (epoch ms), whichever comes first, and never rejects: shutdown
 * steps that must not outlive the stop's grace period. The timer is cleared, so it keeps no process alive.
 */
export async function settleBy(work: Promise<unknown>, deadline: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
  });
  try {
    await Promise.race([work.catch(() => undefined), late]);
  } finally {
    clearTimeout(timer);
  }
}
