// Refreshes the page every 30 seconds, unless the operator has started filling in a form or is
// in one of its fields: a half-filled form is never lost. Pages work without this script (the
// ones without text fields carry a <noscript> refresh instead).
(function () {
  var dirty = false;
  document.addEventListener('input', function () { dirty = true; });
  setInterval(function () {
    var active = document.activeElement;
    var inForm = active && active.form && active.tagName !== 'BUTTON';
    if (!dirty && !inForm) { window.location.reload(); }
  }, 30000);
})();
