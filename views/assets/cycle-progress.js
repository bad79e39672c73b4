// A running provisioning cycle's progress box: asks the service for the cycle's progress every
// few seconds and updates the box in place (it is a polite live region), then shows the report
// once the cycle has finished. Without JavaScript the box has a "Refresh" link instead: no page
// reloads itself on a timer.
(function () {
  'use strict';
  var box = document.querySelector('.cycle-progress[data-progress-url]');
  if (!box || !window.fetch) return;
  var url = box.getAttribute('data-progress-url');
  var every = Number(box.getAttribute('data-interval-ms')) || 3000;
  var step = box.querySelector('[data-step]');
  var count = box.querySelector('[data-count]');
  var bar = box.querySelector('progress');
  var manual = box.querySelector('[data-manual-refresh]');
  var auto = box.querySelector('[data-auto-refresh]');
  function offerManualRefresh(offer) {
    if (manual) manual.hidden = !offer;
    if (auto) auto.hidden = offer;
  }
  offerManualRefresh(false);

  function show(progress) {
    if (step && step.textContent !== progress.stepLabel) step.textContent = progress.stepLabel;
    var counted = progress.total > 0 ? ': ' + progress.done + ' of ' + progress.total : '';
    if (count && count.textContent !== counted) count.textContent = counted;
    if (bar && progress.total > 0) {
      bar.max = progress.total;
      bar.value = progress.done;
      bar.textContent = progress.done + ' of ' + progress.total;
    }
  }

  function poll() {
    fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (response) {
        if (!response.ok) throw new Error('progress answered ' + response.status);
        return response.json();
      })
      .then(function (progress) {
        if (!progress.running) {
          // Finished (or no longer running here): the page itself now shows the outcome.
          window.location.reload();
          return;
        }
        show(progress);
        window.setTimeout(poll, every);
      })
      .catch(function () {
        // Signed out or the service is restarting: offer the plain refresh instead of retrying forever.
        offerManualRefresh(true);
      });
  }
  window.setTimeout(poll, every);
})();
