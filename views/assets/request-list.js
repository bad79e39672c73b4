// "Select all on this page" and "Clear the selection" on the request list without a round trip.
// Without JavaScript the same buttons submit the form and the server shows the list again with
// every row ticked (or none).
(function () {
  'use strict';
  var form = document.querySelector('form.bulk-form');
  if (!form) return;
  var boxes = Array.prototype.slice.call(form.querySelectorAll('input[type=checkbox][name=request]'));

  function mark(box) {
    var row = box.closest('tr');
    if (row) row.classList.toggle('selected', box.checked);
  }

  boxes.forEach(function (box) {
    box.addEventListener('change', function () { mark(box); });
  });

  Array.prototype.forEach.call(form.querySelectorAll('button[data-select]'), function (button) {
    button.addEventListener('click', function (event) {
      event.preventDefault();
      var tick = button.getAttribute('data-select') === 'all';
      boxes.forEach(function (box) {
        box.checked = tick;
        mark(box);
      });
    });
  });
})();
