// The keyboard focus is always visible (WCAG 2.4.7, 1.4.11): on every parent and staff page of
// the journeys, Tab reaches each focusable element in turn, and the focus ring Chromium draws
// (the computed outline, or a box-shadow) contrasts at least 3:1 with the background behind it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, launchBrowser, withBrowserPage, type TestSite } from '../support/browser';
import type { MoodleDouble } from '../support/moodle-double';
import { seedSite, startSiteWithMoodle, walkParentPages, walkStaffPages, WALK_CONSOLE_ERRORS, type SeededSite, type Visit } from '../support/site-pages';

/** Enough Tab presses for the longest page of the walk; the walk stops earlier when focus wraps round. */
const MAX_TABS_PER_PAGE = 120;

type Rgba = [number, number, number, number];

function parseColour(css: string): Rgba | null {
  const match = /rgba?\(([^)]+)\)/.exec(css);
  if (!match) return null;
  const parts = (match[1] as string).split(/[\s,/]+/).filter(Boolean).map(Number);
  return [parts[0] ?? 0, parts[1] ?? 0, parts[2] ?? 0, parts[3] ?? 1];
}

function luminance([r, g, b]: Rgba): number {
  const channel = (value: number) => {
    const c = value / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
}

/** WCAG's contrast ratio between two opaque colours. */
export function contrastRatio(a: Rgba, b: Rgba): number {
  const [light, dark] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number];
  return (light + 0.05) / (dark + 0.05);
}

interface FocusedStyle {
  described: string;
  outlineStyle: string;
  outlineWidth: number;
  outlineColour: string;
  boxShadow: string;
  background: string;
  inBody: boolean;
}

/** The focused element's focus ring and the first opaque background behind it (the ring is drawn outside the element). */
async function focusedStyle(page: Page): Promise<FocusedStyle> {
  return page.evaluate(`(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return { inBody: true, described: 'body', outlineStyle: '', outlineWidth: 0, outlineColour: '', boxShadow: '', background: '' };
    const style = getComputedStyle(el);
    let background = 'rgb(255, 255, 255)';
    for (let node = el.parentElement; node; node = node.parentElement) {
      const colour = getComputedStyle(node).backgroundColor;
      const alpha = /rgba\\([^)]*,\\s*([\\d.]+)\\)/.exec(colour);
      if (colour !== 'transparent' && !(alpha && Number(alpha[1]) === 0)) { background = colour; break; }
    }
    const text = (el.getAttribute('aria-label') || el.textContent || el.getAttribute('name') || el.id || '').trim().replace(/\\s+/g, ' ').slice(0, 50);
    return {
      inBody: false,
      described: el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' "' + text + '"',
      outlineStyle: style.outlineStyle,
      outlineWidth: parseFloat(style.outlineWidth) || 0,
      outlineColour: style.outlineColor,
      boxShadow: style.boxShadow,
      background,
    };
  })()`);
}

/** Why the focus on this element is hard to see, or null when it is plainly visible. */
function focusProblem(style: FocusedStyle): string | null {
  const background = parseColour(style.background);
  if (!background) return `cannot read the background ${style.background}`;
  let ring: string | null = null;
  if (style.outlineStyle !== 'none' && style.outlineWidth >= 2) ring = style.outlineColour;
  else if (style.boxShadow && style.boxShadow !== 'none') ring = /rgba?\([^)]+\)/.exec(style.boxShadow)?.[0] ?? null;
  if (!ring) return `no focus ring (outline ${style.outlineStyle} ${style.outlineWidth}px, box-shadow ${style.boxShadow})`;
  const colour = parseColour(ring);
  if (!colour) return `cannot read the focus colour ${ring}`;
  const ratio = contrastRatio(colour, background);
  return ratio >= 3 ? null : `focus ring ${ring} on ${style.background} is ${ratio.toFixed(2)}:1, below 3:1`;
}

describe('the keyboard focus is always visible, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let seeded: SeededSite;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    ({ site, moodle } = await startSiteWithMoodle());
    seeded = await seedSite(site, moodle);
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
  });

  it('the contrast sum is WCAG’s: the old pale orange ring on the page background is 1.5:1, black on white 21:1', () => {
    assert.equal(contrastRatio([255, 191, 71, 1], [246, 246, 244, 1]).toFixed(1), '1.5');
    assert.equal(contrastRatio([0, 0, 0, 1], [255, 255, 255, 1]).toFixed(0), '21');
  });

  it('every element Tab reaches on every parent and staff page has a focus ring at least 3:1 against what is behind it', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: DESKTOP, allowConsoleErrors: WALK_CONSOLE_ERRORS }, async (session) => {
      const { page } = session;
      const failures: string[] = [];
      let checked = 0;
      const visit: Visit = async (label) => {
        // Start from the top of the page, as someone arriving there does.
        await page.evaluate('document.activeElement && document.activeElement.blur && document.activeElement.blur()');
        let first: string | null = null;
        let reached = 0;
        for (let i = 0; i < MAX_TABS_PER_PAGE; i += 1) {
          await page.keyboard.press('Tab');
          const style = await focusedStyle(page);
          // Past the last element the focus leaves the page (or wraps round to the first).
          if (style.inBody || style.described === first) break;
          first ??= style.described;
          reached += 1;
          const problem = focusProblem(style);
          if (problem) failures.push(`${label}: ${style.described}: ${problem}`);
        }
        if (reached === 0) failures.push(`${label}: Tab reached nothing`);
        checked += reached;
      };
      await walkParentPages(page, site, visit);
      await walkStaffPages(page, site, seeded, visit);
      assert.ok(checked >= 100, `Tab reached the pages' links, fields and buttons (${checked})`);
      assert.deepEqual(failures, [], failures.join('\n'));
    });
  });
});
