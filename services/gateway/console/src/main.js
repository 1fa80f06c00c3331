import { createApp } from 'vue'
import { createRouter, createWebHistory } from 'vue-router'
import 'leaflet/dist/leaflet.css'
import './style.css'
import App from './App.vue'
import { loadMe, restore, session, startLive } from './api.js'
import Login from './pages/Login.vue'
import WarningDetail from './pages/WarningDetail.vue'
import { PAGES } from './pages.js'

const router = createRouter({
  history: createWebHistory('/console/'),
  routes: [
    { path: '/login', name: 'login', component: Login, meta: { title: '登录' } },
    ...PAGES.map((p) => ({ path: p.path, name: p.name, component: p.component, meta: { title: p.title } })),
    { path: '/warnings/:id', name: 'warning', component: WarningDetail, props: true, meta: { title: '预警详情' } },
    { path: '/:rest(.*)', redirect: '/' },
  ],
})

router.beforeEach(async (to) => {
  if (to.name === 'login') return true
  if (!session.refresh) return { name: 'login', query: { next: to.fullPath } }
  if (!session.me) {
    try {
      await loadMe()
    } catch {
      return { name: 'login', query: { next: to.fullPath } }
    }
  }
  startLive()
  return true
})

router.afterEach((to) => {
  document.title = `${to.meta.title || ''} · 前哨应急值班台`
})

restore()
createApp(App).use(router).mount('#app')
