// The prompt variants page: the limit variants reset 12 days from now, so the copy reads as it
// would for a tenant. (A file, not inline: pages allow scripts from this origin only.)
const in12Days = new Date(Date.now() + 12 * 86400000).toISOString();
for (const el of document.querySelectorAll('hydra-upgrade-prompt[reason$="_limit"]')) {
  el.setAttribute("resets-at", in12Days);
}
