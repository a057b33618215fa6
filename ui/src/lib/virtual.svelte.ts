/**
 * A virtualized list: only the rows in (or near) the visible part of the scrolling page are
 * in the DOM, with spacers above and below standing in for the others, so a list of thousands
 * of rows costs what a screenful costs. Rows may differ in height: each rendered row is
 * measured (ResizeObserver) and its height kept; rows never seen count as `estimate`.
 *
 * The page scrolls as before (the `main` element): the list follows that scroll, so the
 * views keep their layout. A view renders `win.visible` between two spacers of `win.top`
 * and `win.bottom` pixels (a `<tr>` in a table, a `<div>` elsewhere), puts `use:win.measure`
 * on each row with its key, and `use:win.attach` on the list's element.
 */
export class VirtualWindow<T> {
  /** Where the visible part of the list starts, in pixels from the list's top (may be < 0). */
  viewTop = $state(0);
  viewHeight = $state(800);
  #version = $state(0);
  /** Measured heights by key (not reactive itself: `#version` says when it changed). */
  #heights: Record<string, number> = Object.create(null) as Record<string, number>;
  readonly #items: () => T[];
  readonly #key: (item: T) => string;
  readonly #estimate: number;
  readonly #overscan: number;

  constructor(items: () => T[], key: (item: T) => string, estimate: number, overscan = 600) {
    this.#items = items;
    this.#key = key;
    this.#estimate = estimate;
    this.#overscan = overscan;
  }

  /** offsets[i]: the top of row i; offsets[n]: the list's height. */
  readonly offsets = $derived.by(() => {
    void this.#version;
    const items = this.#items();
    const o = new Float64Array(items.length + 1);
    for (let i = 0; i < items.length; i++) o[i + 1] = o[i]! + (this.#heights[this.#key(items[i]!)] ?? this.#estimate);
    return o;
  });

  readonly range = $derived.by(() => {
    const o = this.offsets;
    const n = o.length - 1;
    const start = Math.max(0, firstBelow(o, this.viewTop - this.#overscan) - 1);
    const end = Math.min(n, Math.max(start, firstBelow(o, this.viewTop + this.viewHeight + this.#overscan)));
    return { start, end, top: o[start]!, bottom: o[n]! - o[end]! };
  });

  readonly visible = $derived.by(() => this.#items().slice(this.range.start, this.range.end));
  get top(): number {
    return this.range.top;
  }
  get bottom(): number {
    return this.range.bottom;
  }

  /** Action for each rendered row: keeps its measured height. */
  measure = (node: HTMLElement, key: string) => {
    let k = key;
    const ro = new ResizeObserver(() => {
      const h = node.getBoundingClientRect().height;
      if (h > 0 && this.#heights[k] !== h) {
        this.#heights[k] = h;
        this.#version++;
      }
    });
    ro.observe(node);
    return {
      update(next: string) {
        k = next;
      },
      destroy() {
        ro.disconnect();
      },
    };
  };

  /** Action for the list's element: follows the scrolling of the page around it. */
  attach = (node: HTMLElement) => {
    const scroller = (node.closest("main") as HTMLElement | null) ?? document.documentElement;
    const follow = () => {
      const top = node.getBoundingClientRect().top - scroller.getBoundingClientRect().top;
      this.viewTop = -top;
      this.viewHeight = scroller.clientHeight;
    };
    follow();
    scroller.addEventListener("scroll", follow, { passive: true });
    window.addEventListener("resize", follow);
    const ro = new ResizeObserver(follow);
    ro.observe(scroller);
    return {
      destroy() {
        scroller.removeEventListener("scroll", follow);
        window.removeEventListener("resize", follow);
        ro.disconnect();
      },
    };
  };
}

/** The first index whose offset is greater than `y` (offsets ascend). */
function firstBelow(offsets: Float64Array, y: number): number {
  let lo = 0;
  let hi = offsets.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[mid]! > y) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
