import { createRouter, createWebHistory } from 'vue-router'
import HomeView from './views/HomeView.vue'

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/', component: HomeView },
    { path: '/preferences', component: () => import('./views/PreferencesView.vue') },
    { path: '/outbox', component: () => import('./views/OutboxView.vue') },
    { path: '/notifications/:id', component: () => import('./views/NotificationView.vue') },
  ],
})
