/* Filters that apply on change: <select data-autosubmit> submits its form (no inline handler,
   which the admin's Content-Security-Policy refuses). */
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.hasAttribute && field.hasAttribute("data-autosubmit") && field.form) {
      field.form.submit();
    }
  });
})();
