// The parent form and the staff forms: the error summary takes the focus, so screen readers
// announce it first (it is also role=alert, for browsers without JavaScript). Its links put the
// cursor in the field itself (a plain #link only scrolls), with the field's label in view.
(function () {
  'use strict';
  var summary = document.getElementById('error-summary');
  if (!summary) return;
  summary.addEventListener('click', function (event) {
    var link = event.target.closest && event.target.closest('a[href^="#"]');
    var target = link && document.getElementById(link.getAttribute('href').slice(1));
    if (!target) return;
    event.preventDefault();
    var fieldset = target.closest('fieldset');
    var label = (target.type === 'radio' || target.type === 'checkbox') && fieldset ? fieldset.querySelector('legend') : document.querySelector('label[for="' + target.id + '"]');
    (label || target).scrollIntoView();
    target.focus({ preventScroll: true });
  });
  summary.focus();
})();
