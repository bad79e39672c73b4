// Every page of the parent and staff journeys checked in Chromium by axe-core (WCAG 2.x A and AA)
// at the desktop and phone widths the journeys use, and for reflow (WCAG 1.4.10) at 320 and
// 390 px: no page wider than the screen, and every wide table in a scroll region that takes the
// keyboard focus, so its hidden columns can be reached without a mouse.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, CHECKED_WIDTHS, expectNoAxeViolations, launchBrowser, PHONE, withBrowserPage, type TestSite } from '../support/browser';
import type { MoodleDouble } from '../support/moodle-double';
import { seedSite, startSiteWithMoodle, walkParentPages, walkStaffPages, WALK_CONSOLE_ERRORS, type SeededSite, type Visit } from '../support/site-pages';

interface TableInfo {
  caption: string;
  inRegion: boolean;
  regionName: string;
  focusable: boolean;
  scrolls: boolean;
}

/** Each table on the page and the scroll region around it (if any). Written as page source: no DOM types here. */
async function tablesOf(page: Page): Promise<TableInfo[]> {
  return page.evaluate(`Array.from(document.querySelectorAll('main table')).map((table) => {
    const region = table.closest('.table-scroll');
    const style = region ? getComputedStyle(region) : null;
    return {
      caption: (table.caption ? table.caption.textContent : table.className).trim().replace(/\\s+/g, ' ').slice(0, 60),
      inRegion: !!region && region.getAttribute('role') === 'region',
      regionName: (region && region.getAttribute('aria-label')) || '',
      focusable: !!region && region.tabIndex === 0,
      scrolls: !!style && (style.overflowX === 'auto' || style.overflowX === 'scroll'),
    };
  })`);
}

/** What sticks out past the right edge of the screen, for the failure message. */
async function overflowing(page: Page): Promise<{ scrollWidth: number; clientWidth: number; culprits: string[] }> {
  return page.evaluate(`(() => {
    const width = document.documentElement.clientWidth;
    const culprits = [];
    for (const el of document.querySelectorAll('body *')) {
      const box = el.getBoundingClientRect();
      if (box.right > width + 0.5 && box.width > 0) {
        const parent = el.parentElement;
        if (parent && parent.getBoundingClientRect().right > width + 0.5) continue;
        culprits.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '') + ' (right edge ' + Math.round(box.right) + ')');
      }
    }
    return { scrollWidth: document.documentElement.scrollWidth, clientWidth: width, culprits: culprits.slice(0, 8) };
  })()`);
}

describe('every page of the journeys, in Chromium: axe-core and reflow', () => {
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

  for (const width of CHECKED_WIDTHS) {
    it(`axe-core finds no WCAG A or AA violation on any parent or staff page at ${width.context.viewport?.width} px (${width.name})`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context: width.context, allowConsoleErrors: WALK_CONSOLE_ERRORS }, async (session) => {
        const failures: string[] = [];
        const visited: string[] = [];
        const visit: Visit = async (label) => {
          visited.push(label);
          await session.screenshot(label, { checkAccessibility: false });
          await expectNoAxeViolations(session.page, label).catch((error: Error) => failures.push(error.message));
        };
        await walkParentPages(session.page, site, visit);
        await walkStaffPages(session.page, site, seeded, visit);
        assert.ok(visited.length >= 20, `the walk reached every page (${visited.length})`);
        assert.deepEqual(failures, [], failures.join('\n\n'));
      });
    });
  }

  for (const viewportWidth of [320, 390]) {
    it(`at ${viewportWidth} px no page is wider than the screen and every table scrolls in a region the keyboard can reach`, { skip }, async (t) => {
      const context = { ...PHONE, viewport: { width: viewportWidth, height: 800 } };
      await withBrowserPage(browser, t, __filename, { context, allowConsoleErrors: WALK_CONSOLE_ERRORS, checkAccessibility: false }, async (session) => {
        const { page } = session;
        const failures: string[] = [];
        let tablesSeen = 0;
        const visit: Visit = async (label) => {
          await session.screenshot(label);
          const fit = await overflowing(page);
          if (fit.scrollWidth > fit.clientWidth) failures.push(`${label}: ${fit.scrollWidth} px wide on a ${fit.clientWidth} px screen; sticking out: ${fit.culprits.join(', ')}`);
          for (const table of await tablesOf(page)) {
            tablesSeen += 1;
            if (!table.inRegion || !table.regionName || !table.focusable || !table.scrolls) {
              failures.push(`${label}: the table "${table.caption}" is not in a named, focusable scroll region (${JSON.stringify(table)})`);
            }
          }
        };
        await walkParentPages(page, site, visit);
        await walkStaffPages(page, site, seeded, visit);
        assert.ok(tablesSeen >= 5, `the walk met the staff pages' tables (${tablesSeen})`);
        assert.deepEqual(failures, [], failures.join('\n'));
      });
    });
  }
});
