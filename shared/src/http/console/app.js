// The console's entry point: a hash router (#/ runs, #/runs/<id> one run, #/tools tools),
// so the server serves one page and deep links work without server routes, and the API key
// form.

import { setToken, token } from './api.js';
import { runView } from './run.js';
import { runsView } from './runs.js';
import { toolsView } from './tools.js';

const view = document.getElementById('view');
let cleanup = null;

function route() {
  cleanup?.();
  cleanup = null;
  const hash = location.hash || '#/';
  const [path, search = ''] = hash.slice(1).split('?');
  const query = new URLSearchParams(search);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  let name;
  if (parts[0] === 'runs' && parts[1]) {
    name = 'run';
    cleanup = runView(view, parts[1]);
  } else if (parts[0] === 'tools') {
    name = 'tools';
    cleanup = toolsView(view);
  } else {
    name = 'runs';
    cleanup = runsView(view, query);
  }
  view.dataset.view = name;
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.nav === (name === 'run' ? 'runs' : name));
  }
  document.title = name === 'run' ? `Run ${parts[1].slice(0, 8)} · Crane` : `${name[0].toUpperCase()}${name.slice(1)} · Crane`;
}

function showTokenState() {
  const state = document.getElementById('token-state');
  state.textContent = token() ? 'key set for this tab' : 'no key';
  state.dataset.set = String(Boolean(token()));
}

document.getElementById('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('token-input');
  setToken(input.value);
  input.value = '';
  showTokenState();
  route();
});
document.getElementById('token-clear').addEventListener('click', () => {
  setToken('');
  showTokenState();
  route();
});

window.addEventListener('hashchange', route);
showTokenState();
route();
