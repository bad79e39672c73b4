// "Add another child" and "Remove" on the request form without a round trip to the server.
// Without JavaScript the same buttons submit the form and the server re-renders it.
(function () {
  'use strict';
  var form = document.querySelector('form.request-form');
  if (!form) return;
  var section = form.querySelector('#children');
  var max = Number(form.getAttribute('data-max-children')) || 1;

  function children() {
    return Array.prototype.slice.call(section.querySelectorAll('fieldset.child'));
  }

  // Gives every child block the ids, names and labels of its position, and the right buttons.
  function renumber() {
    var blocks = children();
    blocks.forEach(function (block, i) {
      block.setAttribute('data-child-index', String(i));
      block.querySelector('legend').textContent = 'Child ' + (i + 1);
      Array.prototype.forEach.call(block.querySelectorAll('[id],[for],[name],[aria-describedby]'), function (el) {
        ['id', 'for', 'aria-describedby'].forEach(function (attr) {
          var v = el.getAttribute(attr);
          if (v) el.setAttribute(attr, v.replace(/children-\d+-/g, 'children-' + i + '-'));
        });
        var name = el.getAttribute('name');
        if (name && name.indexOf('children[') === 0) el.setAttribute('name', name.replace(/^children\[\d+\]/, 'children[' + i + ']'));
      });
      var remove = block.querySelector('.remove-child');
      if (blocks.length > 1) {
        if (!remove) {
          remove = document.createElement('button');
          remove.type = 'submit';
          remove.name = 'action';
          remove.className = 'secondary remove-child';
          block.appendChild(remove);
        }
        remove.value = 'remove-child-' + i;
        remove.textContent = 'Remove child ' + (i + 1);
      } else if (remove) {
        remove.parentNode.removeChild(remove);
      }
    });
    var add = section.querySelector('.add-child');
    if (add) add.hidden = blocks.length >= max;
  }

  section.addEventListener('click', function (event) {
    var button = event.target.closest && event.target.closest('button');
    if (!button || button.name !== 'action') return;
    var blocks = children();
    if (button.value === 'add-child') {
      event.preventDefault();
      if (blocks.length >= max) return;
      var last = blocks[blocks.length - 1];
      var copy = last.cloneNode(true);
      Array.prototype.forEach.call(copy.querySelectorAll('input'), function (input) {
        input.value = '';
        input.removeAttribute('aria-invalid');
        input.removeAttribute('autofocus');
        input.classList.remove('input-error');
        var described = (input.getAttribute('aria-describedby') || '').split(' ').filter(function (id) { return !/-error$/.test(id); }).join(' ');
        if (described) input.setAttribute('aria-describedby', described);
        else input.removeAttribute('aria-describedby');
      });
      Array.prototype.forEach.call(copy.querySelectorAll('.field-error'), function (el) { el.parentNode.removeChild(el); });
      Array.prototype.forEach.call(copy.querySelectorAll('.field-has-error'), function (el) { el.classList.remove('field-has-error'); });
      last.parentNode.insertBefore(copy, last.nextSibling);
      renumber();
      copy.querySelector('input').focus();
    } else if (/^remove-child-\d+$/.test(button.value)) {
      event.preventDefault();
      var block = button.closest('fieldset.child');
      var index = blocks.indexOf(block);
      block.parentNode.removeChild(block);
      renumber();
      var rest = children();
      var focus = rest[Math.min(index, rest.length - 1)];
      if (focus) focus.querySelector('input').focus();
    }
  });
})();
